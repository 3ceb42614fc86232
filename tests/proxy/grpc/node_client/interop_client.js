// The gRPC interop *client* cases (the spec's doc/interop-test-descriptions.md) on
// @grpc/grpc-js: a pure-JS gRPC on Node's http2 module, a different HTTP/2 stack than
// grpcio's C core. Loads the same protos as the Python tests (../interop/portway_interop).
//
//   node interop_client.js --port N [--case NAME[,NAME...]]... [--tls-ca PATH --server-name NAME]
//
// Prints one JSON line per case: {"case": NAME, "ok": true|false, "error": null|"..."}, and
// exits 0 only if every case passed. All the cases run in order on one channel.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.join(__dirname, '..', 'interop');
const WAIT_MS = 30000; // the deadline of every call: a loaded 2-core CI machine
const CASE_MS = 45000; // a case that has not settled by then is reported as hung
const BIG = 64 * 1024 * 1024;
const REQUEST_SIZES = [27182, 8, 1828, 45904];
const RESPONSE_SIZES = [31415, 9, 2653, 58979];
const SPECIAL_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';
const INITIAL_KEY = 'x-grpc-test-echo-initial';
const INITIAL_VALUE = 'test_initial_metadata_value';
const TRAILING_KEY = 'x-grpc-test-echo-trailing-bin';
const TRAILING_VALUE = Buffer.from([0xab, 0xab, 0xab]);
const S = grpc.status;

function parseArgs(argv) {
  const out = { port: null, cases: [], tlsCa: null, serverName: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--port') out.port = Number(value());
    else if (arg === '--case') out.cases.push(...value().split(',').filter(Boolean));
    else if (arg === '--tls-ca') out.tlsCa = value();
    else if (arg === '--server-name') out.serverName = value();
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!Number.isInteger(out.port) || out.port <= 0) throw new Error('--port is required');
  return out;
}

function loadServices() {
  const files = ['empty.proto', 'messages.proto', 'test.proto'].map((f) =>
    path.join('portway_interop', f),
  );
  const def = protoLoader.loadSync(files, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    includeDirs: [PROTOS],
  });
  return grpc.loadPackageDefinition(def).grpc.testing;
}

function deadline(ms = WAIT_MS) {
  return new Date(Date.now() + ms);
}

function zeros(n) {
  return { body: Buffer.alloc(n) };
}

function assertZeros(payload, size) {
  assert.equal(payload.body.length, size, 'payload size');
  assert.ok(payload.body.equals(Buffer.alloc(size)), 'payload is not all zeros');
}

function largeRequest() {
  return { response_size: 314159, payload: zeros(271828) };
}

function outRequest(reqSize, respSize) {
  return { response_parameters: [{ size: respSize }], payload: zeros(reqSize) };
}

// A unary call's outcome: {err, reply, metadata (initial), status} once both its callback
// and its 'status' event have happened.
function unary(method, req, md = new grpc.Metadata(), opts = {}) {
  return new Promise((resolve) => {
    const out = { err: null, reply: null, metadata: null, status: null };
    let pending = 2;
    const done = () => {
      if (--pending === 0) resolve(out);
    };
    const call = method(req, md, { deadline: deadline(), ...opts }, (err, reply) => {
      out.err = err;
      out.reply = reply;
      done();
    });
    call.on('metadata', (m) => {
      out.metadata = m;
    });
    call.on('status', (s) => {
      out.status = s;
      done();
    });
  });
}

// A streaming call's outcome: {err, messages, metadata, status} once 'status' arrived (and
// 'end' for a call that ended without error; an 'error' call does not emit 'end').
function collect(call, onData) {
  return new Promise((resolve) => {
    const out = { err: null, messages: [], metadata: null, status: null };
    let ended = false;
    const settle = () => {
      if (out.status && (ended || out.err)) resolve(out);
    };
    call.on('data', (m) => {
      out.messages.push(m);
      if (onData) onData(m);
    });
    call.on('metadata', (m) => {
      out.metadata = m;
    });
    call.on('error', (e) => {
      out.err = e;
      settle();
    });
    call.on('end', () => {
      ended = true;
      settle();
    });
    call.on('status', (s) => {
      out.status = s;
      settle();
    });
  });
}

// The next 'data' of a streaming call, or a rejection if it fails or ends first.
function nextMessage(call) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      call.off('data', onData);
      call.off('error', onError);
      call.off('end', onEnd);
    };
    const onData = (m) => {
      cleanup();
      call.pause();
      resolve(m);
    };
    const onError = (e) => {
      cleanup();
      reject(e);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('the stream ended before a message'));
    };
    call.on('data', onData);
    call.on('error', onError);
    call.on('end', onEnd);
    call.resume();
  });
}

function expectCode(err, code, details) {
  assert.ok(err, `expected status ${code}, the call succeeded`);
  assert.equal(err.code, code, `status code (details: ${JSON.stringify(err.details)})`);
  if (details !== undefined) assert.equal(err.details, details, 'status message');
}

function expectOk(out) {
  if (out.err) throw new Error(`call failed: ${out.err.code} ${out.err.details}`);
  assert.equal(out.status.code, S.OK, 'status code');
}

function customMetadata() {
  const md = new grpc.Metadata();
  md.set(INITIAL_KEY, INITIAL_VALUE);
  md.set(TRAILING_KEY, TRAILING_VALUE);
  return md;
}

function checkMetadata(out) {
  assert.ok(out.metadata, 'no initial metadata');
  assert.deepEqual(out.metadata.get(INITIAL_KEY), [INITIAL_VALUE], 'echoed initial metadata');
  const trailing = out.status.metadata.get(TRAILING_KEY);
  assert.equal(trailing.length, 1, 'echoed trailing metadata');
  assert.ok(Buffer.from(trailing[0]).equals(TRAILING_VALUE), 'echoed trailing metadata value');
}

async function statusCase(c, message) {
  const status = { code: 2, message };
  const u = await unary(c.test.UnaryCall.bind(c.test), { response_status: status });
  expectCode(u.err, S.UNKNOWN, message);
  const call = c.test.FullDuplexCall({ deadline: deadline() });
  const done = collect(call);
  call.write({ response_status: status });
  call.end();
  expectCode((await done).err, S.UNKNOWN, message);
}

const CASES = {
  async empty_unary(c) {
    const out = await unary(c.test.EmptyCall.bind(c.test), {});
    if (out.err) throw out.err;
    assert.deepEqual(out.reply, {});
  },

  async large_unary(c) {
    const out = await unary(c.test.UnaryCall.bind(c.test), largeRequest());
    if (out.err) throw out.err;
    assertZeros(out.reply.payload, 314159);
  },

  async client_streaming(c) {
    let call;
    const reply = await new Promise((resolve, reject) => {
      call = c.test.StreamingInputCall({ deadline: deadline() }, (err, r) =>
        err ? reject(err) : resolve(r),
      );
      for (const n of REQUEST_SIZES) call.write({ payload: zeros(n) });
      call.end();
    });
    assert.equal(reply.aggregated_payload_size, 74922);
  },

  async server_streaming(c) {
    const req = { response_parameters: RESPONSE_SIZES.map((size) => ({ size })) };
    const out = await collect(c.test.StreamingOutputCall(req, { deadline: deadline() }));
    expectOk(out);
    out.messages.forEach((m, i) => assertZeros(m.payload, RESPONSE_SIZES[i]));
    assert.deepEqual(
      out.messages.map((m) => m.payload.body.length),
      RESPONSE_SIZES,
    );
  },

  async ping_pong(c) {
    const call = c.test.FullDuplexCall({ deadline: deadline() });
    call.pause();
    for (let i = 0; i < REQUEST_SIZES.length; i++) {
      call.write(outRequest(REQUEST_SIZES[i], RESPONSE_SIZES[i]));
      const reply = await nextMessage(call); // one reply before the next request
      assertZeros(reply.payload, RESPONSE_SIZES[i]);
    }
    const done = collect(call);
    call.end();
    call.resume();
    const out = await done;
    expectOk(out);
    assert.equal(out.messages.length, 0, 'no message after the last reply');
  },

  async empty_stream(c) {
    const call = c.test.FullDuplexCall({ deadline: deadline() });
    const done = collect(call);
    call.end();
    const out = await done;
    expectOk(out);
    assert.equal(out.messages.length, 0);
  },

  async custom_metadata(c) {
    const u = await unary(c.test.UnaryCall.bind(c.test), largeRequest(), customMetadata());
    if (u.err) throw u.err;
    assertZeros(u.reply.payload, 314159);
    checkMetadata(u);
    const call = c.test.FullDuplexCall(customMetadata(), { deadline: deadline() });
    const done = collect(call);
    call.write(outRequest(271828, 314159));
    call.end();
    const out = await done;
    expectOk(out);
    assert.deepEqual(
      out.messages.map((m) => m.payload.body.length),
      [314159],
    );
    checkMetadata(out);
  },

  async status_code_and_message(c) {
    await statusCase(c, 'test status message');
  },

  async special_status_message(c) {
    await statusCase(c, SPECIAL_MESSAGE);
  },

  async unimplemented_method(c) {
    const out = await unary(c.test.UnimplementedCall.bind(c.test), {});
    expectCode(out.err, S.UNIMPLEMENTED);
  },

  async unimplemented_service(c) {
    const out = await unary(c.unimplemented.UnimplementedCall.bind(c.unimplemented), {});
    expectCode(out.err, S.UNIMPLEMENTED);
  },

  async cancel_after_begin(c) {
    // "begun": an EmptyCall started after it on the same channel has completed, so the
    // call's HEADERS have gone out (grpc-js opens streams in call order on a ready channel)
    // and the cancellation is an RST_STREAM on the wire, not a call dropped before it
    let call;
    const result = new Promise((resolve) => {
      call = c.test.StreamingInputCall({ deadline: deadline() }, (e) => resolve(e));
    });
    const ping = await unary(c.test.EmptyCall.bind(c.test), {});
    if (ping.err) throw ping.err;
    call.cancel();
    expectCode(await result, S.CANCELLED);
  },

  async cancel_after_first_response(c) {
    const call = c.test.FullDuplexCall({ deadline: deadline() });
    call.pause();
    call.write(outRequest(27182, 31415));
    const reply = await nextMessage(call);
    assertZeros(reply.payload, 31415);
    const done = collect(call);
    call.cancel();
    call.resume();
    expectCode((await done).err, S.CANCELLED);
  },

  async timeout_on_sleeping_server(c) {
    const call = c.test.FullDuplexCall({ deadline: deadline(1) });
    const done = collect(call);
    call.write({ payload: zeros(27182) });
    const out = await done;
    expectCode(out.err, S.DEADLINE_EXCEEDED);
  },
};

function withBound(promise, ms, name) {
  let timer;
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} did not finish in ${ms} ms`)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const names = args.cases.length ? args.cases : Object.keys(CASES);
  for (const n of names) if (!(n in CASES)) throw new Error(`unknown case ${n}`);
  const testing = loadServices();
  const options = {
    'grpc.max_receive_message_length': BIG,
    'grpc.max_send_message_length': BIG,
    'grpc.enable_retries': 0,
  };
  let creds = grpc.credentials.createInsecure();
  if (args.tlsCa) {
    creds = grpc.credentials.createSsl(fs.readFileSync(args.tlsCa));
    if (args.serverName) {
      options['grpc.ssl_target_name_override'] = args.serverName;
      options['grpc.default_authority'] = args.serverName;
    }
  }
  const target = `127.0.0.1:${args.port}`;
  const test = new testing.TestService(target, creds, options);
  // the same channel for both services, as one client of the spec's would use
  const unimplemented = new testing.UnimplementedService(target, creds, {
    ...options,
    channelOverride: test.getChannel(),
  });
  const c = { test, unimplemented };
  let failed = 0;
  for (const name of names) {
    let error = null;
    try {
      await withBound(CASES[name](c), CASE_MS, name);
    } catch (e) {
      error = e && e.stack ? String(e.stack) : String(e);
      failed++;
    }
    process.stdout.write(`${JSON.stringify({ case: name, ok: error === null, error })}\n`);
  }
  test.close();
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
    process.exit(2);
  },
);
