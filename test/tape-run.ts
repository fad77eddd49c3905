/** One forward and backward of a small graph on a training backend, shared by the training conformance suites. */
import type { Tensor } from '../src/core/backend.js';
import type { TrainingBackend } from '../src/core/training.js';
import { Tape, TapeTensor } from '../src/autograd/tape.js';

/** A leaf's values and shape. */
export interface Input {
  values: Float32Array;
  shape: number[];
}

/** `build` over the inputs as parameters: the output, then every input's gradient for dOut = dOutOf(output size). */
export function runTape(backend: TrainingBackend, inputs: readonly Input[], build: (tape: Tape, leaves: Tensor[]) => Tensor, dOutOf: (n: number) => Float32Array): Float32Array[] {
  const tape = new Tape(backend);
  const leaves = inputs.map((x) => {
    const value = backend.zeros(x.shape);
    backend.write(value, x.values);
    return tape.param(value, backend.zeros(x.shape));
  });
  const out = build(tape, leaves);
  const values = tape.toFloat32(out).slice();
  tape.backwardWith(out, backend.fromFloat32(dOutOf(values.length), out.shape));
  return [values, ...leaves.map((leaf) => backend.toFloat32((leaf as TapeTensor).grad!).slice())];
}
