import { defineConfig } from "vitest/config";

// Unit tests of the modules without DOM or OpenSeadragon (`npm test`); the page itself is tested in a real
// chromium by tests/browser/ (pytest + Playwright).
export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    environment: "node",
  },
});
