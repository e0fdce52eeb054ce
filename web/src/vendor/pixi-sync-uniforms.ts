// Uniform upload for PixiJS 7 without `new Function`, so that Annotorious's WebGL layer runs under the
// server's CSP (`script-src 'self'`, no 'unsafe-eval').
//
// Adapted from @pixi/unsafe-eval 7.4.3 (lib/syncUniforms.mjs), MIT licence,
// Copyright (c) 2013-2023 Mathew Groves, Chad Engler. PixiJS itself generates this function per shader
// with `new Function`; @pixi/unsafe-eval ships this generic version, but it patches the `@pixi/core`
// package, while @annotorious/openseadragon bundles its own copy of PixiJS. plugins/pixi-without-eval.ts
// rewires that bundled copy to call this function at build time.

type Gl = WebGL2RenderingContext;
type Setter = (gl: Gl, location: WebGLUniformLocation, cached: any, value: any) => void;

const SINGLE: Record<string, Setter> = {
  vec3(gl, location, cv, v) {
    if (cv[0] !== v[0] || cv[1] !== v[1] || cv[2] !== v[2]) {
      cv[0] = v[0];
      cv[1] = v[1];
      cv[2] = v[2];
      gl.uniform3f(location, v[0], v[1], v[2]);
    }
  },
  int: (gl, location, _cv, value) => gl.uniform1i(location, value),
  ivec2: (gl, location, _cv, value) => gl.uniform2i(location, value[0], value[1]),
  ivec3: (gl, location, _cv, value) => gl.uniform3i(location, value[0], value[1], value[2]),
  ivec4: (gl, location, _cv, value) => gl.uniform4i(location, value[0], value[1], value[2], value[3]),
  uint: (gl, location, _cv, value) => gl.uniform1ui(location, value),
  uvec2: (gl, location, _cv, value) => gl.uniform2ui(location, value[0], value[1]),
  uvec3: (gl, location, _cv, value) => gl.uniform3ui(location, value[0], value[1], value[2]),
  uvec4: (gl, location, _cv, value) => gl.uniform4ui(location, value[0], value[1], value[2], value[3]),
  bvec2: (gl, location, _cv, value) => gl.uniform2i(location, value[0], value[1]),
  bvec3: (gl, location, _cv, value) => gl.uniform3i(location, value[0], value[1], value[2]),
  bvec4: (gl, location, _cv, value) => gl.uniform4i(location, value[0], value[1], value[2], value[3]),
  mat2: (gl, location, _cv, value) => gl.uniformMatrix2fv(location, false, value),
  mat4: (gl, location, _cv, value) => gl.uniformMatrix4fv(location, false, value),
};

const ARRAY: Record<string, Setter> = {
  float: (gl, location, _cv, value) => gl.uniform1fv(location, value),
  vec2: (gl, location, _cv, value) => gl.uniform2fv(location, value),
  vec3: (gl, location, _cv, value) => gl.uniform3fv(location, value),
  vec4: (gl, location, _cv, value) => gl.uniform4fv(location, value),
  int: (gl, location, _cv, value) => gl.uniform1iv(location, value),
  ivec2: (gl, location, _cv, value) => gl.uniform2iv(location, value),
  ivec3: (gl, location, _cv, value) => gl.uniform3iv(location, value),
  ivec4: (gl, location, _cv, value) => gl.uniform4iv(location, value),
  uint: (gl, location, _cv, value) => gl.uniform1uiv(location, value),
  uvec2: (gl, location, _cv, value) => gl.uniform2uiv(location, value),
  uvec3: (gl, location, _cv, value) => gl.uniform3uiv(location, value),
  uvec4: (gl, location, _cv, value) => gl.uniform4uiv(location, value),
  bool: (gl, location, _cv, value) => gl.uniform1iv(location, value),
  bvec2: (gl, location, _cv, value) => gl.uniform2iv(location, value),
  bvec3: (gl, location, _cv, value) => gl.uniform3iv(location, value),
  bvec4: (gl, location, _cv, value) => gl.uniform4iv(location, value),
  sampler2D: (gl, location, _cv, value) => gl.uniform1iv(location, value),
  samplerCube: (gl, location, _cv, value) => gl.uniform1iv(location, value),
  sampler2DArray: (gl, location, _cv, value) => gl.uniform1iv(location, value),
};

/**
 * `ShaderSystem.syncUniforms` of PixiJS 7 as a plain function: uploads the uniforms of `group` for the
 * bound program (`uniformData`: the shader's declared uniforms; `ud`: the program's locations and cached
 * values; `uv`: the values to upload).
 */
export function syncUniforms(group: any, uniformData: any, ud: any, uv: any, renderer: any): void {
  let textureCount = 0;
  const gl: Gl = renderer.gl;
  for (const name in group.uniforms) {
    const data = uniformData[name];
    const value = uv[name];
    const slot = ud[name];
    const declared = group.uniforms[name];
    if (!data) {
      if (declared.group === true) renderer.shader.syncUniformGroup(value);
      continue;
    }
    const single = data.size === 1 && !data.isArray;
    if (data.type === "float" && single) {
      if (value !== slot.value) {
        slot.value = value;
        gl.uniform1f(slot.location, value);
      }
    } else if (data.type === "bool" && single) {
      if (value !== slot.value) {
        slot.value = value;
        gl.uniform1i(slot.location, Number(value));
      }
    } else if ((data.type === "sampler2D" || data.type === "samplerCube" || data.type === "sampler2DArray") && single) {
      renderer.texture.bind(value, textureCount);
      if (slot.value !== textureCount) {
        slot.value = textureCount;
        gl.uniform1i(slot.location, textureCount);
      }
      textureCount++;
    } else if (data.type === "mat3" && single) {
      gl.uniformMatrix3fv(slot.location, false, declared.a !== undefined ? value.toArray(true) : value);
    } else if (data.type === "vec2" && single) {
      const cv = slot.value;
      const [x, y] = declared.x !== undefined ? [value.x, value.y] : [value[0], value[1]];
      if (cv[0] !== x || cv[1] !== y) {
        cv[0] = x;
        cv[1] = y;
        gl.uniform2f(slot.location, x, y);
      }
    } else if (data.type === "vec4" && single) {
      const cv = slot.value;
      const [a, b, c, d] =
        declared.width !== undefined
          ? [value.x, value.y, value.width, value.height]
          : [value[0], value[1], value[2], value[3]];
      if (cv[0] !== a || cv[1] !== b || cv[2] !== c || cv[3] !== d) {
        cv[0] = a;
        cv[1] = b;
        cv[2] = c;
        cv[3] = d;
        gl.uniform4f(slot.location, a, b, c, d);
      }
    } else {
      const setter = (single ? SINGLE : ARRAY)[data.type];
      if (setter) setter(gl, slot.location, slot.value, value);
    }
  }
}
