// The tmcp side of benchmarks/listen_fanout.py --part http: a tmcp McpServer (in-memory managers)
// behind @tmcp/transport-http on srvx, as the transport's README recommends.
//
//   node serve.mjs            prints "PORT <n>" once listening on 127.0.0.1
//
// Extra routes for the benchmark (not MCP):
//   POST /bench/notify?k=K    server.changed('tools') K times: K notifications/tools/list_changed
//                             reach every listen stream that asked for them
//   POST /bench/gc            a full GC (node --expose-gc), before the parent reads the RSS
import { InMemoryInfoSessionManager, InMemoryStreamSessionManager, InMemorySubscriptionManager } from '@tmcp/session-manager';
import { HttpTransport } from '@tmcp/transport-http';
import { serve } from 'srvx';
import { McpServer } from 'tmcp';

const server = new McpServer(
	{ name: 'listen-bench-tmcp', version: '1.0.0', description: 'listen fan-out benchmark' },
	{ capabilities: { tools: { listChanged: true }, resources: { subscribe: true, listChanged: true } } },
);
server.tool({ name: 'noop', description: 'does nothing' }, async () => ({ content: [{ type: 'text', text: 'ok' }] }));

const transport = new HttpTransport(server, {
	path: '/mcp',
	sessionManager: { streams: new InMemoryStreamSessionManager(), info: new InMemoryInfoSessionManager() },
	subscriptionManager: new InMemorySubscriptionManager(),
});

const ok = (body) => new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });

const http = serve({
	hostname: '127.0.0.1',
	port: 0,
	silent: true,
	gracefulShutdown: false,
	async fetch(request) {
		const url = new URL(request.url);
		if (url.pathname === '/bench/notify') {
			const k = Number(url.searchParams.get('k'));
			for (let i = 0; i < k; i++) server.changed('tools');
			return ok({ sent: k });
		}
		if (url.pathname === '/bench/gc') {
			globalThis.gc?.();
			return ok({ gc: typeof globalThis.gc === 'function' });
		}
		const response = await transport.respond(request);
		return response ?? new Response('Not Found', { status: 404 });
	},
});
await http.ready();
process.stdout.write(`PORT ${new URL(http.url).port}\n`);
