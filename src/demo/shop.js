// shop.js: the reference client of bigtap's buyer API (DESIGN §3).
//
// A shop's page calls bigtap from the browser with fetch(). The session token
// comes from the shop's login (here: shop.json, which the shop's server
// renders for the signed-in buyer) and lives in memory only. Every contract
// answer has its handling below:
//
//   201 won, 200 replay      show the ticket (a replay is the same ticket)
//   410 sold_out / ended     say so; clicking again cannot help
//   425 not_started          count down to starts_at_ms, then try again
//   429, 503                 wait Retry-After plus jitter, then try again
//   503 "outcome":"unknown"  ask GET …/tickets/mine whether the ticket exists
//   401                      the session expired: the buyer must sign in again
//   403, 404, other          say so
//   no answer at all         the service is unreachable (or the browser
//                            blocked it): back off and try again
//
// Retrying a take is always safe: bigtap answers a buyer who already won
// with the same ticket, so a retry never buys twice.

"use strict";

const MAX_TRIES = 12; // one click gives up after this many attempts
const JITTER_MS = 1000; // spreads retries so that waiting buyers do not return together
const SALE_REFRESH_MS = 2000;

let shop; // {api, sale, buyers: [{user, session}]}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function jitter() {
  return Math.floor(Math.random() * JITTER_MS);
}

function apiUrl(path) {
  return shop.api + "/v1/sales/" + encodeURIComponent(shop.sale) + path;
}

// One call to bigtap. Never throws: a failed fetch (network down, or the
// browser refused the answer because of CORS) is status 0.
async function call(method, path, session) {
  const headers = session ? { Authorization: "Bearer " + session } : {};
  try {
    const res = await fetch(apiUrl(path), { method, headers, cache: "no-store" });
    const body = await res.json().catch(() => ({}));
    const retryAfter = Number(res.headers.get("Retry-After")) || 1;
    return { status: res.status, body, retryAfter };
  } catch (e) {
    return { status: 0, body: {}, retryAfter: 1 };
  }
}

// Shows an outcome in a buyer's row; the data-state attribute is what
// styles (and tests) read.
function show(row, state, text) {
  const cell = row.querySelector(".outcome");
  cell.dataset.state = state;
  cell.textContent = text;
}

function showTicket(row, body, state) {
  const until = new Date(body.expires_at_ms).toLocaleTimeString();
  const cell = row.querySelector(".outcome");
  show(row, state, state === "replay" ? "Already yours: ticket " : "Won! Ticket ");
  const ticket = document.createElement("span");
  ticket.className = "ticket";
  ticket.textContent = body.ticket;
  cell.append(ticket, " (pay before " + until + ")");
  cell.dataset.ticket = body.ticket;
}

// Counts down to the sale's start, then returns (plus jitter, so that the
// crowd that waited does not arrive in the same millisecond). A clock behind
// bigtap's sees the start already passed: it still waits half a second, so
// that such a page asks a few times, not in a tight loop.
async function countdown(row, startsAtMs) {
  let waited = false;
  for (;;) {
    const left = startsAtMs - Date.now();
    if (left <= 0) break;
    waited = true;
    show(row, "countdown", "Starts in " + Math.ceil(left / 1000) + " s");
    await sleep(Math.min(left, 250));
  }
  if (!waited) show(row, "countdown", "Starting…");
  await sleep((waited ? 0 : 500) + jitter());
}

// Waits the time bigtap asked for, with jitter, showing why.
async function wait(row, seconds, why) {
  show(row, "waiting", why + ": trying again in " + seconds + " s");
  await sleep(seconds * 1000 + jitter());
}

// After a 503 whose outcome is unknown: did the commit happen? Returns the
// ticket's body if the buyer holds a live one, else null.
async function ownTicket(buyer) {
  const mine = await call("GET", "/tickets/mine", buyer.session);
  if (mine.status === 200 && mine.body.state !== "released") return mine.body;
  return null;
}

// One click: take a ticket, handling each answer until there is a final one.
async function buy(buyer, row) {
  const button = row.querySelector("button");
  button.disabled = true;
  try {
    for (let tries = 1; tries <= MAX_TRIES; tries++) {
      const a = await call("POST", "/tickets", buyer.session);
      const outcome = a.body.outcome;
      if (a.status === 201) return showTicket(row, a.body, "won");
      if (a.status === 200) return showTicket(row, a.body, "replay");
      if (a.status === 410 && outcome === "ended") return show(row, "ended", "The sale has ended");
      if (a.status === 410) return show(row, "sold_out", "Sold out");
      if (a.status === 425) {
        await countdown(row, a.body.starts_at_ms);
        tries = 0; // waiting for the start is not a failed try
        continue;
      }
      if (a.status === 429) {
        await wait(row, a.retryAfter, "Busy");
        continue;
      }
      if (a.status === 503 && outcome === "unknown") {
        show(row, "checking", "Checking whether the ticket is yours…");
        const ticket = await ownTicket(buyer);
        if (ticket) return showTicket(row, ticket, "won");
        await wait(row, a.retryAfter, "Not taken yet");
        continue;
      }
      if (a.status === 503) {
        await wait(row, a.retryAfter, "Busy");
        continue;
      }
      if (a.status === 0) {
        show(row, "unreachable", "Cannot reach the ticket service; trying again…");
        await sleep(Math.min(1000 * 2 ** tries, 15000) + jitter());
        continue;
      }
      if (a.status === 401) return show(row, "session", "Your session expired: please sign in again");
      if (a.status === 403) return show(row, "not_eligible", "This sale is for invited buyers only");
      if (a.status === 404) return show(row, "error", "No such sale");
      return show(row, "error", "Unexpected answer " + a.status + ": please try again");
    }
    show(row, "gave_up", "No answer after several tries: please try again later");
  } finally {
    button.disabled = false;
  }
}

// The sale's public state (cacheable for a second, so a few readers per
// second cost bigtap nothing).
async function refreshSale() {
  const p = document.getElementById("sale");
  const s = await call("GET", "", null);
  if (s.status !== 200) {
    p.dataset.state = "unreachable";
    p.textContent = "Sale " + shop.sale + ": cannot reach the ticket service";
    return;
  }
  p.dataset.state = s.body.state;
  const starts = new Date(s.body.starts_at_ms).toLocaleString();
  const text = {
    scheduled: "opens at " + starts,
    open: "open, about " + s.body.remaining_hint + " of " + s.body.stock_total + " left",
    sold_out: "sold out",
    ended: "ended",
    closed: "closed",
  }[s.body.state] || s.body.state;
  p.textContent = "Sale " + shop.sale + ": " + text;
}

async function main() {
  shop = await (await fetch("shop.json", { cache: "no-store" })).json();
  const sale = new URLSearchParams(location.search).get("sale");
  if (sale) shop.sale = sale;
  document.getElementById("api").textContent = shop.api;
  const template = document.getElementById("buyer-row");
  const rows = document.getElementById("buyers");
  for (const buyer of shop.buyers) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.user = buyer.user;
    row.querySelector(".user").textContent = buyer.user;
    row.querySelector("button").addEventListener("click", () => buy(buyer, row));
    rows.append(row);
  }
  await refreshSale();
  setInterval(refreshSale, SALE_REFRESH_MS);
  document.body.dataset.ready = "true";
}

main();
