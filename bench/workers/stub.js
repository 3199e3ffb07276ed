// Backs the KV (`TOKENS`) and Queue (`EVENTS`) bindings of Portcullis under bare
// workerd. The gateway's hot path uses neither; the sign-in measurement sends one
// event per sign-in (a queue batch, accepted and dropped). Every call is logged so an
// unexpected use would show. The body is read before answering: the queue binding
// waits for its request to be taken.
export default {
  async fetch(request) {
    console.log(`[stub] ${request.method} ${new URL(request.url).pathname}`);
    await request.arrayBuffer();
    if (request.method === "GET") return new Response(null, { status: 404 });
    // What the queue binding's send() and sendBatch() resolve to.
    return Response.json({ metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } });
  },
};
