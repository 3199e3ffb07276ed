// Backs the KV (`TOKENS`) and Queue (`EVENTS`) bindings of Portcullis under bare
// workerd. The gateway's hot path uses neither; the bench only needs the bindings
// to exist. Every call is logged so an unexpected use would show.
export default {
  async fetch(request) {
    console.log(`[stub] ${request.method} ${new URL(request.url).pathname}`);
    return request.method === "GET" ? new Response(null, { status: 404 }) : new Response("{}", { status: 200 });
  },
};
