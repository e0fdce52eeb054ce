import { describe, expect, it } from "vitest";

import { lineageText, loopState, metricText } from "../src/models-page";

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

  it("says whether a loop's rounds start on their own, and which round is in flight", () => {
    const state = { due: true, new_labels: 240, every: 200, since: "digits@2", baseline: "m1" };
    const auto = { automatic: true, check_seconds: 60, in_flight: null, last_automatic: null, paused_until: null };
    expect(loopState({ enabled: true, state, auto })).toEqual({ text: "due · starts on its own (checked every 60 s)", busy: false });
    expect(loopState({ enabled: true, state: { ...state, due: false }, auto: { ...auto, automatic: false } }).text).toBe("waiting · run by hand");
    const flying = { ...auto, in_flight: { job: "5e0c1d2f3a4b5c6d", status: "running", by: "loop:auto" } };
    expect(loopState({ enabled: true, state, auto: flying })).toEqual({ text: "round running (job 5e0c1d2f3a4b, by loop:auto)", busy: true });
    expect(loopState({ enabled: false, state, auto }).text).toBe("disabled");
    expect(loopState({ enabled: true, state, auto: { ...auto, paused_until: "2026-12-07T13:00:00+00:00" } }).text).toBe(
      "paused after a failed round until 2026-12-07 13:00",
    );
    expect(loopState({ enabled: true, state }).text).toBe("due"); // an older server without the schedule
  });
});
