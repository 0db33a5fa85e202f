"""adafv.eval: the instruments, not the method. The toy world (scenes, the model, its training and the accuracy
measurement; `adafv.eval.toyworld`) and the benchmark behind `adafv bench` (`adafv.eval.bench`)."""
