fn main() {
    let g = activegen::Gpu::new(None).unwrap();
    for e in ["matmul_sg_nn", "matmul_sg_nt", "matmul_sg_tn"] {
        let t = std::time::Instant::now();
        g.kernel("matmul_subgroup", e, &[]).unwrap();
        println!("{e}: {:.2}s", t.elapsed().as_secs_f64());
    }
}
