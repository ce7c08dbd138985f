// The web page end to end: the real `server` binary, the page in headless
// Chromium (Debian's chromium driven by playwright-core), and line clients
// over TCP beside it. Run by tests/web_page.rs (`cargo test`), or by hand:
//   SERVER_BIN=target/debug/server node --test tests/web/e2e.mjs
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { chromium } from "playwright-core";

const SERVER_BIN = process.env.SERVER_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PATIENCE = 15000;

assert.ok(SERVER_BIN, "SERVER_BIN names the server binary");

let browser;
async function getBrowser() {
  if (!browser) {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  }
  return browser;
}
after(async () => {
  if (browser) await browser.close();
});

// ---- the server -------------------------------------------------------

async function startServer(dir, args = [], webPort = 0, port = 0) {
  const child = spawn(
    SERVER_BIN,
    ["--port", String(port), "--web-port", String(webPort), "--data-dir", dir, ...args],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "info" } },
  );
  const stderr = [];
  child.stderr.on("data", (d) => stderr.push(d.toString()));
  const lines = [];
  let buffer = "";
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start: ${stderr.join("")}`)), PATIENCE);
    child.stdout.on("data", (d) => {
      buffer += d.toString();
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        lines.push(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
      const plain = lines.find((l) => /^listening on [^ ]+$/.test(l));
      const web = lines.find((l) => l.endsWith(" (web)"));
      if (plain && web) {
        clearTimeout(timer);
        resolve({
          plain: plain.replace("listening on ", ""),
          web: web.replace("listening on ", "").replace(" (web)", ""),
        });
      }
    });
    child.on("exit", (code) => reject(new Error(`the server exited (${code}): ${stderr.join("")}`)));
  });
  const addrs = await ready;
  const exited = new Promise((resolve) => child.on("exit", resolve));
  return {
    ...addrs,
    child,
    stderr,
    async stop(signal = "SIGTERM") {
      child.kill(signal);
      await exited;
    },
  };
}

function freshDir() {
  return mkdtempSync(join(tmpdir(), "chatroom-web-"));
}

// ---- a line client --------------------------------------------------------

async function lineClient(addr, name) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const socket = net.connect({ host, port });
  const client = { socket, seen: [], buffer: "", waiters: [] };
  socket.setEncoding("utf8");
  socket.on("data", (d) => {
    client.buffer += d;
    let nl;
    while ((nl = client.buffer.indexOf("\n")) >= 0) {
      client.seen.push(client.buffer.slice(0, nl));
      client.buffer = client.buffer.slice(nl + 1);
    }
    client.waiters.forEach((w) => w());
  });
  socket.on("error", () => {});
  await new Promise((resolve) => socket.once("connect", resolve));
  client.send = (line) => socket.write(line + "\n");
  client.expect = (pred, what) =>
    new Promise((resolve, reject) => {
      const start = client.seen.length;
      let index = 0;
      const check = () => {
        for (; index < client.seen.length; index++) {
          if (pred(client.seen[index])) {
            client.waiters = client.waiters.filter((w) => w !== check);
            clearTimeout(timer);
            resolve(client.seen[index]);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        client.waiters = client.waiters.filter((w) => w !== check);
        reject(new Error(`no ${what}; seen ${JSON.stringify(client.seen.slice(start))}`));
      }, PATIENCE);
      client.waiters.push(check);
      check();
    });
  client.send(name);
  await client.expect((l) => l.startsWith("* hello "), `${name}'s login`);
  client.close = () => socket.destroy();
  return client;
}

// ---- the page -------------------------------------------------------------

async function openPage(web, viewport = { width: 1200, height: 800 }) {
  const context = await (await getBrowser()).newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`http://${web}/`);
  page.errors = errors;
  return page;
}

async function logIn(page, name) {
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "name");
  await page.keyboard.type(name);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#app:not([hidden])", { timeout: PATIENCE });
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "message", null, { timeout: PATIENCE });
}

async function say(page, text) {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

async function expectMessage(page, from, text) {
  await page.waitForFunction(
    ([from, text]) =>
      [...document.querySelectorAll("#messages .msg")].some(
        (li) => li.querySelector(".from")?.textContent === from && li.querySelector(".text")?.textContent === text,
      ),
    [from, text],
    { timeout: PATIENCE },
  );
}

async function shownTexts(page) {
  return page.$$eval("#messages .msg:not(.system) .text", (els) => els.map((e) => e.textContent));
}

async function shownIds(page) {
  return page.$$eval("#messages .msg[data-id]", (els) => els.map((e) => Number(e.dataset.id)));
}

// ---- the stories ----------------------------------------------------------------

test("two browser users and a line client chat across rooms", async () => {
  const dir = freshDir();
  const server = await startServer(dir);
  try {
    const alice = await openPage(server.web);
    const focused = await alice.evaluate(() => document.activeElement.id);
    assert.equal(focused, "name", "on load the name field has focus");
    await logIn(alice, "alice");
    const bob = await openPage(server.web);
    await logIn(bob, "bob");
    const carol = await lineClient(server.plain, "carol");

    await say(alice, "hello from alice");
    await expectMessage(bob, "alice", "hello from alice");
    await carol.expect((l) => l.endsWith("alice: hello from alice"), "alice's line at carol");
    carol.send("hi from nc");
    await expectMessage(alice, "carol", "hi from nc");
    await expectMessage(bob, "carol", "hi from nc");

    // bob makes a room; alice sees it appear and goes in by clicking it.
    await say(bob, "/create dev");
    await bob.waitForFunction(() => document.querySelector("#title").textContent === "#dev");
    await alice.waitForFunction(() => [...document.querySelectorAll("#rooms .name")].some((n) => n.textContent === "#dev"));
    await alice.click("#rooms button:has-text('#dev')");
    await alice.waitForFunction(() => document.querySelector("#title").textContent === "#dev");
    await say(bob, "welcome to dev");
    await expectMessage(alice, "bob", "welcome to dev");
    // The people of the room are listed.
    await alice.waitForFunction(() => {
      const people = [...document.querySelectorAll("#people button")].map((b) => b.textContent);
      return people.includes("alice") && people.includes("bob");
    });
    // Across rooms: carol in #general does not hear #dev, and the other way.
    carol.send("general only");
    await say(alice, "dev only");
    await carol.expect((l) => l.endsWith("carol: general only"), "carol's echo");
    await expectMessage(bob, "alice", "dev only");
    assert.ok(!carol.seen.some((l) => l.includes("dev only")), "carol heard #dev");
    assert.ok(!(await shownTexts(alice)).includes("general only"), "alice's #dev view shows #general");
    // #general's count of unread messages shows on alice's room list.
    await alice.waitForFunction(() =>
      [...document.querySelectorAll("#rooms button")].some(
        (b) => b.querySelector(".name").textContent === "#general" && b.querySelector(".badge"),
      ),
    );
    // carol comes into #dev and chats with both.
    carol.send("/join dev");
    await carol.expect((l) => l.startsWith("* you joined #dev"), "carol in #dev");
    carol.send("hello dev");
    await expectMessage(alice, "carol", "hello dev");
    await expectMessage(bob, "carol", "hello dev");
    // A whisper is a conversation of its own.
    carol.send("/msg alice just for you");
    await alice.waitForFunction(() => [...document.querySelectorAll("#dms .name")].some((n) => n.textContent === "carol"));
    await alice.click("#dms button:has-text('carol')");
    await expectMessage(alice, "carol", "just for you");
    await say(alice, "got it");
    await carol.expect((l) => l.includes("(whisper) alice: got it"), "the whispered answer");
    assert.deepEqual(alice.errors, []);
    carol.close();
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("older history loads on scroll, keeping the reading position", async () => {
  const dir = freshDir();
  let rows = "id,timestamp,room,sender,recipient,text\n";
  for (let i = 1; i <= 300; i++) {
    rows += `${i},2026-11-25T10:00:00.000+00:00,general,old,,old message ${i}\n`;
  }
  writeFileSync(join(dir, "messages.csv"), rows);
  const server = await startServer(dir);
  try {
    const page = await openPage(server.web, { width: 900, height: 600 });
    await logIn(page, "reader");
    await expectMessage(page, "old", "old message 300");
    let ids = await shownIds(page);
    assert.equal(ids[0], 251, "the join replay is the last 50");
    // Scroll to the top: older messages come, and the first one read stays put.
    for (let round = 0; round < 10 && ids[0] > 1; round++) {
      const first = ids[0];
      // Scrolled to the top, the first message shown is where the eye is.
      const top = await page.evaluate((first) => {
        const log = document.querySelector("#log");
        log.scrollTop = 0;
        log.dispatchEvent(new Event("scroll"));
        return document.querySelector(`#messages .msg[data-id="${first}"]`).getBoundingClientRect().top;
      }, first);
      await page.waitForFunction((first) => {
        const shown = [...document.querySelectorAll("#messages .msg[data-id]")].map((e) => Number(e.dataset.id));
        return shown[0] < first;
      }, first, { timeout: PATIENCE });
      const after = await page.$eval(`#messages .msg[data-id="${first}"]`, (el) => el.getBoundingClientRect().top);
      assert.ok(Math.abs(after - top) < 60, `message ${first} moved from ${top} to ${after}`);
      ids = await shownIds(page);
    }
    assert.equal(ids[0], 1, "scrolled back to the first message");
    assert.deepEqual(ids, [...Array(300).keys()].map((i) => i + 1), "every id once, in order");
    await page.$eval("#log", (log) => { log.scrollTop = 0; log.dispatchEvent(new Event("scroll")); });
    await page.waitForFunction(() => /start of/.test(document.querySelector("#older").textContent), null, { timeout: PATIENCE });
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a server restart mid-chat: the page comes back with no duplicate and no gap", async () => {
  const dir = freshDir();
  const args = ["--history", "10"];
  let server = await startServer(dir, args);
  const webPort = Number(server.web.slice(server.web.lastIndexOf(":") + 1));
  const plainPort = Number(server.plain.slice(server.plain.lastIndexOf(":") + 1));
  try {
    const page = await openPage(server.web);
    let blocked = false;
    await page.routeWebSocket(/\/ws$/, (ws) => {
      if (blocked) ws.close();
      else ws.connectToServer();
    });
    await page.reload();
    await logIn(page, "alice");
    let carol = await lineClient(server.plain, "carol");
    for (let i = 1; i <= 5; i++) carol.send(`before ${i}`);
    await expectMessage(page, "carol", "before 5");

    // The server stops in the middle of the chat, and while the page cannot
    // reach the new one, more is said than a join replays (10 here).
    blocked = true;
    carol.close();
    await server.stop("SIGKILL");
    server = await startServer(dir, args, webPort, plainPort);
    carol = await lineClient(server.plain, "carol");
    for (let i = 1; i <= 25; i++) carol.send(`while away ${i}`);
    await carol.expect((l) => l.endsWith("carol: while away 25"), "carol's last echo");
    blocked = false;
    await page.waitForFunction(() => document.querySelector("#status").hidden, null, { timeout: 30000 });
    carol.send("after the restart");
    await expectMessage(page, "carol", "after the restart");
    // Everything once, in order: the gap was filled from /history.
    const texts = (await shownTexts(page)).filter((t) => /^(before|while away|after)/.test(t));
    const expected = [
      ...[1, 2, 3, 4, 5].map((i) => `before ${i}`),
      ...[...Array(25).keys()].map((i) => `while away ${i + 1}`),
      "after the restart",
    ];
    assert.deepEqual(texts, expected);
    const ids = await shownIds(page);
    assert.equal(new Set(ids).size, ids.length, "no message twice");
    carol.close();
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the page on a 360x640 phone: no sideways scrolling, people in a drawer", async () => {
  const dir = freshDir();
  const server = await startServer(dir);
  try {
    const page = await openPage(server.web, { width: 360, height: 640 });
    await logIn(page, "phone");
    const bob = await lineClient(server.plain, "bob");
    bob.send("a long line ".repeat(40).trim());
    await page.waitForFunction(() => document.querySelectorAll("#messages .msg:not(.system)").length > 0);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 360, `the page is ${width} px wide`);
    // The people are in a drawer, out of sight until asked for.
    const hidden = await page.$eval("#people-pane", (el) => el.getBoundingClientRect().left >= window.innerWidth);
    assert.ok(hidden, "the people list is out of the way");
    await page.click("#open-people");
    await page.waitForFunction(() => {
      const r = document.querySelector("#people-pane").getBoundingClientRect();
      return r.left < window.innerWidth && r.right <= window.innerWidth + 1;
    });
    await page.click("#scrim", { position: { x: 10, y: 300 } });
    await say(page, "sent from a phone");
    await bob.expect((l) => l.endsWith("phone: sent from a phone"), "the phone's line");
    bob.close();
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("markup in a message or a name is shown as text and runs nothing", async () => {
  const dir = freshDir();
  const server = await startServer(dir);
  try {
    const page = await openPage(server.web);
    await logIn(page, "alice");
    const evilName = "<img/src=x/onerror=pwned=1>";
    const evil = await lineClient(server.plain, evilName);
    const payload = '<img src=x onerror="window.pwned=1"> and <script>window.pwned=2</script> https://example.org/a?b=1 javascript:alert(1)';
    evil.send(payload);
    await expectMessage(page, evilName, payload);
    const images = await page.$$eval("#messages img", (els) => els.length);
    assert.equal(images, 0, "no element was made from the text");
    const pwned = await page.evaluate(() => window.pwned);
    assert.equal(pwned, undefined);
    const links = await page.$$eval("#messages a", (els) => els.map((a) => a.href));
    assert.deepEqual(links, ["https://example.org/a?b=1"], "only http(s) became a link");
    assert.deepEqual(page.errors, []);
    evil.close();
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
