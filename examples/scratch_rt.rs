use std::time::Instant;
use spectune::{linalg, Gpu, Tensor};
fn main() {
    let gpu = pollster::block_on(Gpu::request()).unwrap();
    let w = Tensor::from_slice(&gpu, &[384, 384], &spectune::random::Rng::new(1).vec_f32(384*384)).unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        pollster::block_on(linalg::svd_truncated(&gpu, &w, 8, &Default::default())).unwrap();
        eprintln!("total {:.2} ms", t.elapsed().as_secs_f64()*1e3);
    }
}
