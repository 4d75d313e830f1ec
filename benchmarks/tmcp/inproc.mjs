// The tmcp side of benchmarks/listen_fanout.py --part inproc: @tmcp/session-manager's
// InMemorySubscriptionManager alone (no transport), as the Python side measures ours.
//
//   node inproc.mjs '{"n":10000,"m":20,"uris":100,"repeat":3,"send":"push"}'
//
// N listen subscriptions, each its own origin (as the HTTP transport gives every listen
// request one), filters {toolsListChanged: true, resourceSubscriptions: ["res://<i>"]}.
// A round: one notifications/tools/list_changed to all (phase A: await manager.send), then
// notifications/resources/updated for `uris` URIs spread over the streams (phase B: every
// send started, then awaited together, as the transport fires them). M rounds per run.
// The send callback is the whole consumer: "push" appends the notification to the stream's
// array (the manager's own cost); "frame" first does what tmcp's server and transport do per
// delivery (tag the subscription id, JSON.stringify, SSE-frame, TextEncoder) and appends bytes.
// Every stream's deliveries are checked after each phase (outside the timed window).
// Prints one JSON line: per run, phase A and B deliveries per second of wall time and of CPU time
// (process.cpuUsage: this process's every thread); failures (streams that did not get
// exactly what they should); the shares of the wall time the process ran (cpu) and waited for a
// CPU another process had (wait: noise from neighbours).
import { readFileSync } from 'node:fs';
import { InMemorySubscriptionManager } from '@tmcp/session-manager';

const config = JSON.parse(process.argv[2] ?? '{}');
const { n = 10000, m = 20, uris = 100, repeat = 3, send = 'push' } = config;
const META = 'io.modelcontextprotocol/subscriptionId';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What tmcp does per delivery on a listen stream (McpServer #tag_subscription + the transport's framing). */
function frame(notification, id) {
	const params = notification.params ?? {};
	const tagged = { ...notification, params: { ...params, _meta: { ...params._meta, [META]: id } } };
	return encoder.encode('event: message\ndata: ' + JSON.stringify(tagged) + '\n\n');
}

const manager = new InMemorySubscriptionManager();
const received = Array.from({ length: n }, () => []);
const created = [];
for (let i = 0; i < n; i++) {
	const sink = received[i];
	created.push(
		manager.create(
			{ id: i, origin: crypto.randomUUID(), filters: { toolsListChanged: true, resourceSubscriptions: [`res://${i}`] } },
			{
				acknowledge: () => {},
				send: send === 'frame' ? (notification) => { sink.push(frame(notification, i)); } : (notification) => { sink.push(notification); },
				close: () => {},
			},
		),
	);
}
if (!(await Promise.all(created)).every(Boolean)) throw new Error('a subscription was refused');

const step = Math.max(1, Math.floor(n / uris));
const watched = Array.from({ length: uris }, (_, j) => j * step); // the streams whose URI is updated
const watchedSet = new Set(watched);
const listChanged = { jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: {} };
const updates = watched.map((i) => ({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: `res://${i}` } }));

/** What stream i got, as [method, uri, id] (id: only in "frame" mode, where it is in the message). */
function decoded(item) {
	if (send !== 'frame') return [item.method, item.params?.uri, undefined];
	const text = decoder.decode(item);
	const message = JSON.parse(text.slice('event: message\ndata: '.length, -2));
	return [message.method, message.params?.uri, message.params._meta[META]];
}

/** Streams that did not get exactly `want(i)` (a list of [method, uri]); clears every array. */
function failures(want) {
	let failed = 0;
	for (let i = 0; i < n; i++) {
		const got = received[i].map(decoded);
		const expected = want(i);
		const ok =
			got.length === expected.length &&
			got.every(([method, uri, id], k) => method === expected[k][0] && uri === expected[k][1] && (send !== 'frame' || id === i));
		if (!ok) failed++;
		received[i].length = 0;
	}
	return failed;
}

/** Seconds this (single-threaded) process ran and waited for a CPU so far: /proc/self/schedstat. */
function schedstat() {
	const [ran, waited] = readFileSync('/proc/self/schedstat', 'utf8').split(' ').map(Number);
	return [ran / 1e9, waited / 1e9];
}

const runs = [];
let failed = 0;
const [ran0, waited0] = schedstat();
const wall0 = performance.now();
for (let run = 0; run < repeat; run++) {
	const spent = { list: [0, 0], updated: [0, 0] }; // [wall s, CPU s]
	const clock = () => {
		const { user, system } = process.cpuUsage();
		return [performance.now() / 1000, (user + system) / 1e6];
	};
	const add = (key, since, until) => {
		spent[key][0] += until[0] - since[0];
		spent[key][1] += until[1] - since[1];
	};
	for (let round = 0; round < m; round++) {
		let t0 = clock();
		await manager.send(listChanged);
		let t1 = clock();
		failed += failures(() => [['notifications/tools/list_changed', undefined]]);
		add('list', t0, t1);
		t0 = clock();
		await Promise.all(updates.map((u) => manager.send(u)));
		t1 = clock();
		failed += failures((i) => (watchedSet.has(i) ? [['notifications/resources/updated', `res://${i}`]] : []));
		add('updated', t0, t1);
	}
	runs.push({
		list_changed_per_s: (n * m) / spent.list[0],
		list_changed_per_cpu_s: (n * m) / spent.list[1],
		updated_per_s: (uris * m) / spent.updated[0],
		updated_per_cpu_s: (uris * m) / spent.updated[1],
	});
}
const wall = (performance.now() - wall0) / 1000;
const [ran1, waited1] = schedstat();
const cpu = (ran1 - ran0) / wall;
const wait = (waited1 - waited0) / wall;
process.stdout.write(JSON.stringify({ node: process.version, send, n, m, uris, runs, failures: failed, cpu, wait }) + '\n');
