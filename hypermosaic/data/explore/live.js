// hypermosaic live viewer: OpenSeadragon over a build's store, grown on demand by the server.
//
// The tile source starts at one node (the *root*) and reaches LEVELS levels below it: a tile
// is a node, a level is a depth (getLevelScale divides by each level's grid). Only nodes the
// server says are stored "exist" (tileExists), so the browser never asks for a missing one and
// OpenSeadragon keeps drawing the parent, scaled up, until the node lands; then its tile is
// dropped from the matrix so that the next update loads it. Zooming two levels below the root
// re-roots the source on the child under the centre (zooming out past it, on the parent), so
// the numbers stay small at any depth. The URL's hash names the root and the view.
"use strict";
(() => {
  const S = JSON.parse(document.getElementById("settings").textContent);
  const LEVELS = S.levels;
  const gridAt = depth => S.grids[Math.min(depth, S.grids.length - 1)];
  const keyOf = address => address.length
    ? address.map(([row, col]) => `${row}_${col}`).join("/") : "root";
  const parseKey = key => (!key || key === "root") ? []
    : key.split("/").map(step => step.split("_").map(Number));
  const gridsBelow = base => Array.from({ length: LEVELS }, (_, k) => gridAt(base.length + k));

  const known = new Set();  // nodes the server says are stored
  let root = [];
  let missing = null;  // nodes the last answered view still lacks
  let sent = 0, answered = 0, failed = 0;
  let socket = null, timer = null, swapping = false;

  function makeSource(base) {
    const grids = gridsBelow(base);
    const side = grids.reduce((a, b) => a * b, 1);
    const nodeAt = (level, x, y) => {
      const address = base.slice();
      let below = grids.slice(0, level).reduce((a, b) => a * b, 1);
      for (let k = 0; k < level; k++) {
        below /= grids[k];
        address.push([Math.floor(y / below) % grids[k], Math.floor(x / below) % grids[k]]);
      }
      return address;
    };
    return {
      width: S.size * side, height: S.size * side, tileSize: S.size, tileOverlap: 0,
      minLevel: 0, maxLevel: LEVELS, base: base.slice(),
      getLevelScale(level) {
        let scale = 1;
        for (let k = level; k < LEVELS; k++) scale /= grids[k];
        return scale;
      },
      getTileUrl: (level, x, y) => `/nodes/${keyOf(nodeAt(level, x, y))}.${S.ext}`,
      tileExists: (level, x, y) => known.has(keyOf(nodeAt(level, x, y))),
    };
  }

  const viewer = OpenSeadragon({
    id: "viewer", prefixUrl: "/static/openseadragon/images/", drawer: "canvas",
    maxZoomPixelRatio: 2, minZoomImageRatio: 0.5, visibilityRatio: 0.1, animationTime: 0.6,
    showNavigationControl: true,
  });
  window.viewer = viewer;

  // --- where we look -------------------------------------------------------------------------
  function wantedDepth() {
    const bounds = viewer.viewport.getBounds(true);
    const pixels = viewer.viewport.getContainerSize().x * (window.devicePixelRatio || 1);
    const grids = gridsBelow(root);
    let perSide = 1, level = 0;
    // a level is wanted once its nodes show at least half their pixels (OSD's minPixelRatio)
    while (level < LEVELS && pixels / bounds.width / (perSide * grids[level]) >= S.size / 2) {
      perSide *= grids[level];
      level += 1;
    }
    return root.length + level;
  }

  function sendView() {
    clearTimeout(timer);
    timer = null;
    if (!socket || socket.readyState !== WebSocket.OPEN || !viewer.world.getItemCount()) return;
    const b = viewer.viewport.getBounds(true);
    sent += 1;
    socket.send(JSON.stringify({ type: "view", root: keyOf(root), seq: sent,
      rect: [b.x, b.y, b.x + b.width, b.y + b.height], depth: wantedDepth() }));
  }

  function soon() {
    if (timer === null) timer = setTimeout(() => { maybeReroot(); sendView(); }, 80);
  }

  // --- what the server tells us ----------------------------------------------------------------
  function refresh(keys) {
    // newly stored nodes: forget their "does not exist" tiles so the next update loads them
    let touched = false;
    for (let i = 0; i < viewer.world.getItemCount(); i++) {
      const item = viewer.world.getItemAt(i);
      const base = item.source.base, grids = gridsBelow(base);
      for (const key of keys) {
        const address = parseKey(key), level = address.length - base.length;
        if (level < 0 || level > LEVELS || keyOf(address.slice(0, base.length)) !== keyOf(base)) {
          continue;
        }
        let x = 0, y = 0;
        for (let k = 0; k < level; k++) {
          y = y * grids[k] + address[base.length + k][0];
          x = x * grids[k] + address[base.length + k][1];
        }
        const column = item.tilesMatrix[level] && item.tilesMatrix[level][x];
        if (column && column[y] && !column[y].exists) {
          delete column[y];
          touched = true;
        }
      }
      if (touched) {
        item._needsUpdate = true;
        item._needsDraw = true;
      }
    }
    if (touched) viewer.forceRedraw();
  }

  function learn(keys) {
    const fresh = keys.filter(key => !known.has(key));
    fresh.forEach(key => known.add(key));
    if (fresh.length) refresh(fresh);
  }

  function status() {
    const text = missing === null ? "connecting" : missing ? `making ${missing} nodes` : "sharp";
    document.getElementById("status").textContent =
      `live · ${keyOf(root)} · depth ${wantedDepth()} · ${text}` +
      (failed ? ` · ${failed} failed` : "");
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/live`);
    socket.onopen = sendView;
    socket.onmessage = event => {
      const message = JSON.parse(event.data);
      if (message.type === "nodes") {
        learn(message.present);
        if (message.root === keyOf(root)) {
          missing = message.missing;
          answered = message.seq;
        }
      } else if (message.type === "landed") {
        learn(message.nodes);
        soon();
      } else if (message.type === "resync") {
        sendView();
      } else if (message.type === "failed") {
        failed += message.nodes.length;
      } else if (message.type === "error") {
        console.warn(message.message);
      }
      status();
    };
    socket.onclose = event => {
      document.getElementById("status").textContent =
        `${event.reason || "disconnected"}; reconnecting`;
      setTimeout(connect, 2000);
    };
  }

  // --- re-rooting and the URL ------------------------------------------------------------------
  function reroot(next, place) {
    swapping = true;
    const old = viewer.world.getItemAt(0);
    let done = false;
    viewer.addTiledImage({
      tileSource: makeSource(next), x: place.x, y: place.y, width: place.w,
      success: event => {
        const item = event.item;
        const finish = () => {
          if (done) return;
          done = true;
          // where the view is and where its animation goes, in the new root's square
          const move = r => new OpenSeadragon.Rect((r.x - place.x) / place.w,
            (r.y - place.y) / place.w, r.width / place.w, r.height / place.w);
          const now = move(viewer.viewport.getBounds(true));
          const goal = move(viewer.viewport.getBounds());
          viewer.world.removeItem(old);
          item.setPosition(new OpenSeadragon.Point(0, 0), true);
          item.setWidth(1, true);
          viewer.viewport.fitBounds(now, true);
          viewer.viewport.fitBounds(goal);
          root = next;
          swapping = false;
          sendView();
          remember();
        };
        if (item.getFullyLoaded()) finish();
        else item.addOnceHandler("fully-loaded-change", finish);
        setTimeout(finish, 4000);  // a slow tile must not hold the view on the old root
      },
      error: () => { swapping = false; },
    });
    sendView();
  }

  function maybeReroot() {
    if (swapping) return;
    const b = viewer.viewport.getBounds(true), grids = gridsBelow(root);
    if (b.width < 1 / (grids[0] * grids[1])) {  // two levels in: re-root on the centre's child
      const c = b.getCenter(), g = grids[0];
      const col = Math.min(g - 1, Math.max(0, Math.floor(c.x * g)));
      const row = Math.min(g - 1, Math.max(0, Math.floor(c.y * g)));
      reroot(root.concat([[row, col]]), { x: col / g, y: row / g, w: 1 / g });
    } else if (root.length && b.width > 1.2) {  // zoomed out past the root: its parent
      const [row, col] = root[root.length - 1], g = gridAt(root.length - 1);
      reroot(root.slice(0, -1), { x: -col, y: -row, w: g });
    }
  }

  function remember() {
    const b = viewer.viewport.getBounds(true);
    const f = v => Number(v.toPrecision(8));
    history.replaceState(null, "", `#node=${keyOf(root)}&x=${f(b.x)}&y=${f(b.y)}&w=${f(b.width)}`);
  }

  function opened() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const w = Number(hash.get("w"));
    if (w > 0) {
      const size = viewer.viewport.getContainerSize();
      viewer.viewport.fitBounds(new OpenSeadragon.Rect(Number(hash.get("x")),
        Number(hash.get("y")), w, w * size.y / size.x), true);
    }
    connect();
  }

  root = parseKey(new URLSearchParams(location.hash.slice(1)).get("node"));
  viewer.addOnceHandler("open", opened);
  viewer.addHandler("viewport-change", soon);
  viewer.addHandler("animation-finish", () => { maybeReroot(); remember(); status(); });
  viewer.open(makeSource(root));
  window.live = {
    root: () => keyOf(root), missing: () => missing, depth: wantedDepth, known,
    settled: () => !swapping && answered === sent && missing === 0,
    state: () => ({ root: keyOf(root), sent, answered, missing, swapping, failed }),
  };
})();
