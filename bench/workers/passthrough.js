// (a) The bare JavaScript pass-through Worker: forwards every request, unchanged,
// to the origin. No auth at all: the ceiling for any gateway on this runtime.
export default {
  fetch(request, env) {
    const url = new URL(request.url);
    return fetch(new Request(env.ORIGIN_URL + url.pathname + url.search, request));
  },
};
