// Elementwise ops over flat f32 arrays, vectorised by a grid-stride loop (any length fits in
// 65535 workgroups).

struct Params {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (n)
@group(0) @binding(2) var<storage, read> y: array<f32>;         // (n)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // (n)

const WG: u32 = 256u;

// out = x + y
@compute @workgroup_size(WG, 1, 1)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        out[i] = x[i] + y[i];
    }
}

// out = x
@compute @workgroup_size(WG, 1, 1)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        out[i] = x[i];
    }
}

// out = alpha * x + beta * y
@compute @workgroup_size(WG, 1, 1)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        out[i] = p.alpha * x[i] + p.beta * y[i];
    }
}

// out += alpha * x (in place)
@compute @workgroup_size(WG, 1, 1)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        out[i] = fma(p.alpha, x[i], out[i]);
    }
}

// out *= alpha (in place)
@compute @workgroup_size(WG, 1, 1)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        out[i] = p.alpha * out[i];
    }
}
