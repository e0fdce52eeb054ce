import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

import { pixiWithoutEval } from "./plugins/pixi-without-eval.ts";

// The production build is served by the Python app (src/gigavision/server/static/).
const outDir = fileURLToPath(new URL("../src/gigavision/server/static", import.meta.url));

// `npm run dev` proxies the API and tiles to a running `gigavision serve`.
const backend = process.env.GIGAVISION_BACKEND ?? "http://127.0.0.1:8000";
const proxied = ["/api", "/dzi", "/iiif", "/healthz", "/openapi.json", "/docs"];

// The API docs (/docs) load Swagger UI from the app itself, never from a CDN: the server's CSP is
// `default-src 'self'`. The files are copied from the swagger-ui-dist devDependency into static/docs/
// (sourceMappingURL comments dropped: the maps are not shipped). Defined here, not in plugins/, so that
// `make web` (which watches this file) rebuilds when it changes.
const SWAGGER_UI_FILES = ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE"];

function swaggerUiAssets(): Plugin {
  const dist = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
  return {
    name: "gigavision-swagger-ui-assets",
    apply: "build",
    generateBundle() {
      for (const name of SWAGGER_UI_FILES) {
        const bytes = readFileSync(join(dist, name));
        const source = /\.(js|css)$/.test(name)
          ? bytes.toString("utf8").replace(/\n?(\/\/# sourceMappingURL=\S+|\/\*# sourceMappingURL=\S+ ?\*\/)\s*$/, "\n")
          : bytes;
        this.emitFile({ type: "asset", fileName: `docs/${name}`, source });
      }
    },
  };
}

export default defineConfig({
  base: "/",
  publicDir: false,
  // Annotorious's bundled PixiJS is patched to run without eval (CSP `script-src 'self'`).
  plugins: [pixiWithoutEval(), swaggerUiAssets()],
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
