// Runs the live page's script (src/admin/live.html) under node against a
// stub DOM and a /stats.json-like document, and checks what its Servers
// and Query rules tables show. usage: node live_page_check.js LIVE.HTML
"use strict";
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
let src = html.slice(html.indexOf("<script>") + "<script>".length, html.indexOf("</script>"));
// No polling or timers here: the page's own start-up lines are left out.
src = src.split("\n").filter((l) => !/^(poll\(\)|setInterval)/.test(l)).join("\n");
const els = {};
function el(id) {
  return els[id] || (els[id] = {
    id, style: {}, textContent: "", className: "", onchange: null,
    tBodies: [{ rows: [], set innerHTML(v) { this.rows = []; }, appendChild(r) { this.rows.push(r); } }],
  });
}
global.document = {
  getElementById: el,
  createElement: (tag) => ({ tag, children: [], textContent: "", className: "", appendChild(c) { this.children.push(c); } }),
};
global.window = { onresize: null, prompt: () => null };
global.sessionStorage = { getItem: () => null };
eval(src + "\nglobal.renderServersAndRules = renderServersAndRules;");

function check(what, got, want) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    console.log("FAIL " + what + ": got " + JSON.stringify(got) + ", want " + JSON.stringify(want));
    process.exit(1);
  }
}
const cells = (id, i) => els[id].tBodies[0].rows[i].children.map((c) => c.textContent);
renderServersAndRules({
  servers: [
    { name: "db1", role: "primary", weight: 100, state: "up", in_rotation: true, connections: 4, in_use: 2,
      running: 2, max_concurrency: 2, waiting_users: 1, lag_ms: null,
      read_only: false, service: { count: 1234, p50_us: 250, p99_us: 1200 }, went_out: 0, came_back: 0, last_error: null },
    { name: "db2", role: "replica", weight: 200, state: "out: replication stopped", in_rotation: false, connections: 0, in_use: 0,
      running: 0, max_concurrency: null, waiting_users: 0, lag_ms: 1500, read_only: true, service: { count: 0, p50_us: 0, p99_us: 0 }, went_out: 1, came_back: 0, last_error: "x" },
  ],
  rules: [{ name: "hot", conditions: "pattern = \"ids\"", action: "cache_ttl_ms = 500", hits: 7, cached: 5, delayed: 1, invalidated: 2 }],
  result_cache: { entries: 1, bytes: 100, cache_size: 1000, hits: 5, misses: 2, coalesced: 1, evictions: 0, invalidated: 3 },
});
check("db1 row", cells("servers", 0), ["db1", "primary", "100", "up", "4 / 2", "2 / 2 (1 waiting)", "—", "no", "1,234", "250 µs", "1.20 ms", "0 / 0", ""]);
check("db2 state", cells("servers", 1).slice(0, 8), ["db2", "replica", "200", "out: replication stopped", "0 / 0", "0", "1.50 s", "yes"]);
check("db2 is red", els["servers"].tBodies[0].rows[1].children[3].className, "err");
check("rule row", cells("rules", 0), ["hot", "pattern = \"ids\"", "cache_ttl_ms = 500", "7", "5", "1", "2"]);
check("cache line", els["cache-line"].textContent,
  "result cache: 1 entries, 100 of 1,000 bytes; hits 5, misses 2, coalesced 1, evictions 0, invalidated 3");
renderServersAndRules({ servers: [], rules: [], result_cache: null });
check("no rules: the card is hidden", els["rules-card"].style.display, "none");
console.log("OK live page tables");
