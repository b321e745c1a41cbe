#!/usr/bin/env node
// A tinytelem live-stream consumer in Node.js, using only the `ws` package.
//
//   npm install
//   tinytelem serve --device emu:esp32s3 --run --wait-clients 1 &   # waits for us
//   TINYTELEM_TOKEN=... node consumer.js ws://127.0.0.1:8765 [--level 10ms] [--rate 10]
//                                        [--spans layers|raw|off]
//
// It speaks the JSON subprotocol (tinytelem.v1.json) described in docs/streaming.md: it
// subscribes to power summaries, prints one line per interesting message, and at the end one
// line starting with "SUMMARY " followed by JSON (message counts, tokens, drops per stream
// class, close code). With `serve --wait-clients 1` the run starts only once it has
// subscribed, so it sees the whole run.
'use strict';

const WebSocket = require('ws');

function parseArgs(argv) {
  const opts = { url: null, level: '10ms', rate: 10, spans: 'layers' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--level') opts.level = argv[++i];
    else if (argv[i] === '--rate') opts.rate = Number(argv[++i]);
    else if (argv[i] === '--spans') opts.spans = argv[++i];
    else opts.url = argv[i];
  }
  if (!opts.url) {
    console.error('usage: node consumer.js ws://host:port [--level 10ms] [--rate 10] ' +
                  '[--spans layers|raw|off]');
    process.exit(64);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const token = process.env.TINYTELEM_TOKEN;
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const ws = new WebSocket(opts.url, ['tinytelem.v1.json'], { headers });

const summary = {
  schema: null, counts: {}, tokens: [], buckets: 0, energy_j: 0, layer_s: 0, dropped: 0,
  dropped_by_class: {}, server_dropped: 0, bye: false, close_code: null,
};

ws.on('open', () => {
  ws.send(JSON.stringify({
    type: 'subscribe', level: opts.level, rate_hz: opts.rate, spans: opts.spans,
  }));
});

ws.on('message', (data) => {
  const m = JSON.parse(data.toString('utf8'));
  summary.counts[m.type] = (summary.counts[m.type] || 0) + 1;
  switch (m.type) {
    case 'hello':
      summary.schema = m.schema;
      console.log(`hello ${m.schema} from ${m.server}; levels ${m.levels.join(',')}`);
      break;
    case 'summary':
      // Columns: one entry per bucket. Energy = mean current * voltage * bucket duration.
      for (let i = 0; i < m.mean.length; i++) {
        summary.energy_j += m.mean[i] * m.voltage_v * (m.n[i] / m.sample_rate_hz);
      }
      summary.buckets += m.mean.length;
      break;
    case 'token':
      summary.tokens.push(m.index);
      if (m.phase === 1) console.log(`token #${m.index} id=${m.token_id} at ${m.device_s}s`);
      break;
    case 'layers':
      // Operator spans aggregated per token: seconds inside each transformer layer.
      summary.layer_s += m.layer_s.reduce((a, b) => a + b, 0);
      break;
    case 'dropped': {
      // Only droppable classes (span, raw) are lost by a client that keeps up with tokens.
      const what = Object.entries(m.classes || {}).map(([k, v]) => `${v} ${k}`).join(', ');
      if (m.server) {
        summary.server_dropped = m.total;
        console.log(`the server fell behind and dropped ${what} (total ${m.total})`);
      } else {
        summary.dropped = m.total;
        summary.dropped_by_class = m.totals || {};
        console.log(`dropped for us: ${what} (total ${m.total})`);
      }
      break;
    }
    case 'bye':
      summary.bye = true;
      console.log(`bye: ${m.reason}`);
      break;
    default:
      break;
  }
});

ws.on('unexpected-response', (_req, res) => {
  console.error(`refused: HTTP ${res.statusCode}`);
  process.exit(2);
});

ws.on('error', (err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});

ws.on('close', (code) => {
  summary.close_code = code;
  console.log('SUMMARY ' + JSON.stringify(summary));
  process.exit(summary.bye ? 0 : 3);
});
