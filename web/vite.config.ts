import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

import { pixiWithoutEval } from "./plugins/pixi-without-eval.ts";

// The production build is served by the Python app (src/gigavision/server/static/).
const outDir = fileURLToPath(new URL("../src/gigavision/server/static", import.meta.url));

// `npm run dev` proxies the API and tiles to a running `gigavision serve`.
const backend = process.env.GIGAVISION_BACKEND ?? "http://127.0.0.1:8000";
const proxied = ["/api", "/dzi", "/iiif", "/healthz"];

export default defineConfig({
  base: "/",
  publicDir: false,
  // Annotorious's bundled PixiJS is patched to run without eval (CSP `script-src 'self'`).
  plugins: [pixiWithoutEval()],
  // Served through the plugin pipeline in `npm run dev` too (pre-bundled deps skip plugin transforms).
  optimizeDeps: { exclude: ["@annotorious/openseadragon"] },
  build: {
    outDir,
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // No inline polyfill script: the server's CSP is `script-src 'self'`.
    modulePreload: { polyfill: false },
    // Never inline assets as data: URLs for scripts; images are fine but keep files separate.
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    host: "127.0.0.1",
    proxy: Object.fromEntries(proxied.map((p) => [p, { target: backend, changeOrigin: false }])),
  },
});
