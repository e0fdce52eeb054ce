import { describe, expect, it } from "vitest";

import { lineageText, metricText } from "../src/models-page";

describe("the models page's text", () => {
  it("writes an alias's lineage down to the dataset version", () => {
    const alias = { name: "production", model: "digits-classify-20261207" };
    const dataset = { ref: "digits@3", exists: true, created_by: "ana", created_at: "2026-12-07T10:00:00+00:00", images: 1203, annotations: 3400 };
    expect(lineageText(alias, { model: alias.model, aliases: ["production"], dataset })).toBe(
      "production → digits-class → digits@3: 1,203 images, 3,400 labels, frozen by ana at 2026-12-07 10:00:00",
    );
    expect(lineageText(alias, { model: alias.model, aliases: [], dataset: { ...dataset, same_content: false } })).toContain(
      "content changed",
    );
    expect(lineageText(alias, { model: alias.model, aliases: [], dataset: { ref: "digits@1", exists: false } })).toBe(
      "production → digits-class → digits@1 (that dataset version no longer exists)",
    );
    expect(lineageText(alias, undefined)).toContain("model folder is gone");
  });

  it("shows metrics to 4 significant digits, counts with separators, text as it is", () => {
    expect(metricText(0.941234)).toBe("0.9412");
    expect(metricText(12345)).toBe("12,345");
    expect(metricText("test")).toBe("test");
    expect(metricText(null)).toBe("—");
  });
});
