import { describe, expect, it } from "vitest";

import {
  clampSlice,
  middleSlice,
  onSlice,
  sliceAttributes,
  sliceDziUrl,
  sliceStep,
  volumeOf,
  type VolumeInfo,
} from "../src/volume";

const ID = "ab".repeat(32);
// what ingest writes for 20 slices of 56 x 48 voxels, 0.7 x 0.7 x 2.5 mm (tests/test_volumes.py)
const META = {
  shape: [20, 48, 56],
  spacing: [0.7, 0.7, 2.5],
  planes: {
    axial: { width: 56, height: 48, slices: 20 },
    coronal: { width: 56, height: 71, slices: 48 },
    sagittal: { width: 48, height: 71, slices: 56 },
  },
};

describe("volumeOf", () => {
  it("reads a volume's planes from its metadata", () => {
    const volume = volumeOf({ reader: "volume", meta: { volume: META } }) as VolumeInfo;
    expect(volume.shape).toEqual([20, 48, 56]);
    expect(volume.planes.coronal).toEqual({ width: 56, height: 71, slices: 48 });
  });

  it("is null for 2D images and for metadata it cannot trust", () => {
    expect(volumeOf({ reader: "tiff", meta: { volume: META } })).toBeNull();
    expect(volumeOf({ reader: "volume" })).toBeNull();
    expect(volumeOf({ reader: "volume", meta: { volume: { ...META, shape: [20, 48] } } })).toBeNull();
    const noSagittal = { ...META, planes: { axial: META.planes.axial, coronal: META.planes.coronal } };
    expect(volumeOf({ reader: "volume", meta: { volume: noSagittal } })).toBeNull();
    const zero = { ...META, planes: { ...META.planes, axial: { width: 56, height: 48, slices: 0 } } };
    expect(volumeOf({ reader: "volume", meta: { volume: zero } })).toBeNull();
  });
});

describe("slices", () => {
  const axial = META.planes.axial;

  it("opens a plane in its middle and keeps the slider on the plane", () => {
    expect(middleSlice(axial)).toBe(10);
    expect(clampSlice(-3, axial)).toBe(0);
    expect(clampSlice(25, axial)).toBe(19);
    expect(clampSlice(7.6, axial)).toBe(8);
  });

  it("names a slice's tiles and refuses anything else", () => {
    expect(sliceDziUrl(ID, "coronal", 12)).toBe(`/dzi/${ID}:coronal:12.dzi`);
    expect(() => sliceDziUrl("../x", "axial", 1)).toThrow();
    expect(() => sliceDziUrl(ID, "axial", -1)).toThrow();
  });

  it("steps with , . and Page Up / Down, ten at a time with Shift", () => {
    const key = (k: string, mods: Partial<KeyboardEvent> = {}) =>
      sliceStep({ key: k, ctrlKey: false, metaKey: false, altKey: false, shiftKey: false, ...mods });
    expect(key(".")).toBe(1);
    expect(key(",")).toBe(-1);
    expect(key("PageDown")).toBe(1);
    expect(key("PageUp", { shiftKey: true })).toBe(-10);
    expect(key(">", { shiftKey: true })).toBe(10);
    expect(key(".", { ctrlKey: true })).toBeNull();
    expect(key("a")).toBeNull();
  });
});

describe("onSlice", () => {
  it("shows what was drawn on this slice of this plane", () => {
    const drawn = { attributes: sliceAttributes("coronal", 20) };
    expect(drawn.attributes).toEqual({ plane: "coronal", slice: 20 });
    expect(onSlice(drawn, "coronal", 20)).toBe(true);
    expect(onSlice(drawn, "coronal", 21)).toBe(false);
    expect(onSlice(drawn, "axial", 20)).toBe(false);
    expect(onSlice({ attributes: { plane: "axial", slice: "7" } }, "axial", 7)).toBe(true);
  });

  it("shows a 3D box on the axial slices it spans", () => {
    const box = { attributes: { z0: 4, z1: 9 } };
    expect([3, 4, 8, 9].map((i) => onSlice(box, "axial", i))).toEqual([false, true, true, false]);
    expect(onSlice(box, "sagittal", 5)).toBe(false);
  });

  it("shows annotations that name no plane on every slice", () => {
    expect(onSlice({ attributes: {} }, "sagittal", 3)).toBe(true);
  });
});
