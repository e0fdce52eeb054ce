import { describe, expect, it } from "vitest";

import { ApiError, authHeaders, loginUrl } from "../src/api";
import { loginError, nextPath } from "../src/login";

describe("login", () => {
  it("comes back only to a path of this site", () => {
    expect(nextPath("?next=%2F%23%2Fimage%2Fabc")).toBe("/#/image/abc");
    expect(nextPath("")).toBe("/");
    expect(nextPath("?next=https%3A%2F%2Fevil.example%2F")).toBe("/");
    expect(nextPath("?next=%2F%2Fevil.example")).toBe("/");
    expect(nextPath("?next=%2Flogin")).toBe("/");
    expect(loginUrl("/#/image/abc")).toBe("/login?next=%2F%23%2Fimage%2Fabc");
    expect(loginUrl("//evil.example")).toBe("/login?next=%2F");
  });

  it("says why a login failed", () => {
    expect(loginError(new ApiError(401, "unauthorized", "wrong user name or password"))).toBe(
      "Wrong user name or password.",
    );
    expect(loginError(new ApiError(429, "too_many_attempts", "x"))).toMatch(/wait a minute/);
    expect(loginError(new TypeError("offline"))).toBe("The server could not be reached.");
  });

  it("sends no CSRF header without a session, and none on safe methods", () => {
    expect(authHeaders("POST")).toEqual({});
    expect(authHeaders("GET")).toEqual({});
  });
});
