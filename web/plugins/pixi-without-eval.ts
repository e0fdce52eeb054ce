// Build-time patch: Annotorious for OpenSeadragon draws annotations with a bundled copy of PixiJS 7,
// whose shader system compiles uniform-upload code with `new Function` and refuses to start where eval
// is forbidden ("Current environment does not allow unsafe-eval"). The server's CSP is
// `script-src 'self'` (no 'unsafe-eval'), and it stays that way: this plugin rewrites the two methods
// of the bundled ShaderSystem the way @pixi/unsafe-eval does for a stand-alone PixiJS:
//   systemCheck()  -> no eval probe, no error
//   syncUniforms() -> src/vendor/pixi-sync-uniforms.ts (no generated code)
// The build fails if the patterns are not found exactly once (e.g. after an Annotorious upgrade), so the
// viewer never ships with an overlay that dies under the CSP.

import { fileURLToPath } from "node:url";
import type { Plugin } from "vite";

const BUNDLE = /[\\/]@annotorious[\\/]openseadragon[\\/]dist[\\/]annotorious-openseadragon\.es\.js$/;
const SYNC_MODULE = fileURLToPath(new URL("../src/vendor/pixi-sync-uniforms.ts", import.meta.url));

// PixiJS 7.4 as bundled (names minified):
//   systemCheck() { if (!KE()) throw new Error("Current environment does not allow unsafe-eval, ..."); }
//   syncUniforms(t, e, i) { (t.syncUniforms[this.shader.program.id] || this.createSyncGroups(t))(e.uniformData,
//     t.uniforms, this.renderer, i); }
const SYSTEM_CHECK = new RegExp(
  String.raw`systemCheck\(\)\s*\{\s*if\s*\(!\w+\(\)\)\s*` +
    String.raw`throw new Error\(\s*"Current environment does not allow unsafe-eval[^"]*"\s*\);?\s*\}`,
  "g",
);
const SYNC_UNIFORMS = new RegExp(
  String.raw`syncUniforms\((\w+),\s*(\w+),\s*(\w+)\)\s*\{\s*` +
    String.raw`\(\1\.syncUniforms\[this\.shader\.program\.id\]\s*\|\|\s*this\.createSyncGroups\(\1\)\)` +
    String.raw`\(\2\.uniformData,\s*\1\.uniforms,\s*this\.renderer,\s*\3\);?\s*\}`,
  "g",
);

function countOf(pattern: RegExp, code: string): number {
  return [...code.matchAll(pattern)].length;
}

/** Patches the PixiJS copy inside `@annotorious/openseadragon` so it needs no eval. */
export function pixiWithoutEval(): Plugin {
  let patched = false;
  return {
    name: "gigavision:pixi-without-eval",
    enforce: "pre",
    transform(code, id) {
      if (!BUNDLE.test(id.split("?", 1)[0] ?? "")) return null;
      const checks = countOf(SYSTEM_CHECK, code);
      const syncs = countOf(SYNC_UNIFORMS, code);
      if (checks !== 1 || syncs !== 1) {
        this.error(
          `pixi-without-eval: expected one ShaderSystem.systemCheck and one syncUniforms in ${id}, ` +
            `found ${checks} and ${syncs}; update plugins/pixi-without-eval.ts for this Annotorious version`,
        );
      }
      const body = code
        .replace(SYSTEM_CHECK, "systemCheck() {}")
        .replace(
          SYNC_UNIFORMS,
          (_match, group: string, program: string) =>
            `syncUniforms(${group}, ${program}) { __gvSyncUniforms(${group}, this.shader.program.uniformData, ` +
            `${program}.uniformData, ${group}.uniforms, this.renderer); }`,
        );
      patched = true;
      const header = `import { syncUniforms as __gvSyncUniforms } from ${JSON.stringify(SYNC_MODULE)};\n`;
      return { code: header + body, map: null };
    },
    buildEnd(error) {
      // Any other entry of the package (e.g. its UMD build) would ship PixiJS unpatched.
      const loaded = [...this.getModuleIds()].some((id) => id.includes("@annotorious/openseadragon/dist/"));
      if (!error && loaded && !patched) {
        this.error("pixi-without-eval: @annotorious/openseadragon was bundled but not patched");
      }
    },
  };
}
