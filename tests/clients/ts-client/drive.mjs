// Drives a running Warden with the real `@placeos/ts-client`, as a PlaceOS front end
// would: set up with an API key, list systems page by page, bind a status variable of a
// module, call a function, and see the bound value change.
//
//   WARDEN_API_KEY=… NODE_EXTRA_CA_CERTS=<data-dir>/tls/self-signed.crt \
//     node drive.mjs --server https://127.0.0.1:8443 --system sys-… --module Projector_1 \
//       --status power --exec power --args '[true]'
//
// The key comes from the environment, never the command line (which others can read).
// Each step prints one JSON line on standard output: {"step": …, …}. Any failure prints
// {"step": "error", "message": …}, a timeout {"step": "timeout", …}, and both exit 1.
// WARDEN_TS_CLIENT_DEBUG=1 turns the client's own log on (on standard error).

import { parseArgs } from 'node:util';
import WebSocket from 'ws';

const { values: options } = parseArgs({
    options: {
        server: { type: 'string' },
        system: { type: 'string' },
        module: { type: 'string' },
        status: { type: 'string' },
        exec: { type: 'string' },
        args: { type: 'string', default: '[]' },
        timeout: { type: 'string', default: '30' },
    },
});

function print(step, fields = {}) {
    process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

function fail(message) {
    print('error', { message: String(message) });
    process.exit(1);
}

for (const name of ['server', 'system', 'module', 'status', 'exec']) {
    if (!options[name]) fail(`--${name} is required`);
}
const apiKey = process.env.WARDEN_API_KEY;
if (!apiKey) fail('set WARDEN_API_KEY');
const server = new URL(options.server);
const args = JSON.parse(options.args);

let step = 'start';
setTimeout(() => {
    print('timeout', { during: step, seconds: Number(options.timeout) });
    process.exit(1);
}, Number(options.timeout) * 1000).unref();
process.on('unhandledRejection', (reason) => fail(describe(reason)));

// What the client expects of a browser, supplied before it is loaded (it reads
// `localStorage` as it loads). No page: `window.location` stays undefined, so the client
// takes its host from the setup options.
class MemoryStorage {
    #items = new Map();
    get length() { return this.#items.size; }
    key(index) { return [...this.#items.keys()][index] ?? null; }
    getItem(key) { return this.#items.has(key) ? this.#items.get(key) : null; }
    setItem(key, value) { this.#items.set(key, String(value)); }
    removeItem(key) { this.#items.delete(key); }
    clear() { this.#items.clear(); }
}
globalThis.window = globalThis;
globalThis.parent = globalThis;
globalThis.localStorage = new MemoryStorage();
globalThis.sessionStorage = new MemoryStorage();
globalThis.document = { cookie: '' };
if (!globalThis.navigator) {
    globalThis.navigator = { userAgent: 'node', platform: 'node' };
}
globalThis.WebSocket = WebSocket;
if (process.env.WARDEN_TS_CLIENT_DEBUG) {
    globalThis.debug = true;
    console.debug = console.error;
}

/** An error from the client (an HTTP response, a socket error message) as text. */
function describe(error) {
    if (error && typeof error === 'object') {
        if ('status' in error && 'url' in error) return `HTTP ${error.status} from ${error.url}`;
        return JSON.stringify(error);
    }
    return String(error);
}

try {
    step = 'load';
    // The ES build: the package's `main` is CommonJS under `"type": "module"`, which Node
    // refuses to load.
    const placeos = await import('@placeos/ts-client/dist/index.es.js');
    const { firstValueFrom } = await import('rxjs');

    step = 'setup';
    await placeos.setup({
        host: server.host,
        secure: server.protocol === 'https:',
        auth_uri: '/auth/oauth/authorize',
        token_uri: '/auth/oauth/token',
        redirect_uri: `${server.origin}/oauth-resp.html`,
        scope: 'public',
        handle_login: false,
        // Credentials in the socket's query string, not a cookie (there is no browser).
        token_header: true,
    });
    placeos.setAPI_Key(apiKey);
    print('setup', { authority: placeos.authority()?.version ?? null, api_key: placeos.isFixedDevice() });

    // Every system, one per page, following the server's `Link` header.
    step = 'systems';
    let page = await firstValueFrom(placeos.querySystems({ limit: 1 }));
    const total = page.total;
    const ids = page.data.map((system) => system.id);
    let pages = 1;
    while (page.next) {
        page = await firstValueFrom(page.next());
        ids.push(...page.data.map((system) => system.id));
        pages += 1;
    }
    print('systems', { total, pages, ids, found: ids.includes(options.system) });
    if (!ids.includes(options.system)) fail(`system ${options.system} is not listed`);

    // Bind, and wait for the status's value.
    step = 'bind';
    const module = placeos.getModule(options.system, options.module);
    const variable = module.variable(options.status);
    const values = [];
    let waiting = null;
    variable.subscribe((value) => {
        if (value === undefined || value === null) return;
        values.push(value);
        waiting?.();
    });
    const notified = (count) => new Promise((resolve) => {
        waiting = () => values.length >= count && resolve(values[count - 1]);
        waiting();
    });
    variable.bind();
    const first = await notified(1);
    print('notify', { name: options.status, value: first });

    step = 'exec';
    const result = await module.execute(options.exec, args);
    print('exec', { name: options.exec, args, value: result });

    // The bound value changes: a second notify with a different value.
    step = 'change';
    let latest = await notified(2);
    while (JSON.stringify(latest) === JSON.stringify(first)) {
        latest = await notified(values.length + 1);
    }
    print('notify', { name: options.status, value: latest });
    process.exit(0);
} catch (error) {
    fail(`${step}: ${describe(error)}`);
}
