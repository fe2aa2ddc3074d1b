// act_lib.wgsl: activation functions shared by the fused epilogues.
// Codes: 0 identity, 1 relu, 2 leaky_relu(slope), 3 tanh, 4 sigmoid.
// Every derivative is written in terms of the OUTPUT y, so a fused kernel only keeps y:
// relu'(x) = [y > 0], leaky'(x) = y > 0 ? 1 : slope, tanh' = 1 - y^2, sigmoid' = y (1 - y).

fn act_apply(x: f32, act: u32, slope: f32) -> f32 {
    switch act {
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(x * slope, x, x > 0.0); }
        case 3u: {
            // tanh through exp of a clamped argument: exact to f32 rounding and free of inf/inf.
            let t = exp(-2.0 * abs(clamp(x, -20.0, 20.0)));
            return sign(x) * (1.0 - t) / (1.0 + t);
        }
        case 4u: {
            // The two branches keep exp's argument non-positive, so it never overflows.
            if (x >= 0.0) {
                return 1.0 / (1.0 + exp(-x));
            }
            let e = exp(x);
            return e / (1.0 + e);
        }
        default: { return x; }
    }
}

fn act_grad_from_output(y: f32, act: u32, slope: f32) -> f32 {
    switch act {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return select(slope, 1.0, y > 0.0); }
        case 3u: { return 1.0 - y * y; }
        case 4u: { return y * (1.0 - y); }
        default: { return 1.0; }
    }
}
