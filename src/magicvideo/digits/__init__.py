"""Moving MNIST from real handwritten digits: captioned data with frame-rate strides
(:mod:`.data`, :mod:`.writer`), a digit/direction video classifier (:mod:`.classifier`) and
the evaluation of generated digit videos (:mod:`.evaluate`). See docs/digits.md."""
