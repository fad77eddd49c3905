/**
 * What bounds decode: the bytes one decoded token reads (every weight it uses once, and the KV cache up to its
 * position), against the machine's read bandwidth measured by the native backend. Decode as a percentage of
 * bandwidth ÷ bytes per token says how close it runs to the memory limit. Dimension legend: L layers.
 */
import { byteSize, type OlmoeModel, type RoutingObserver, type Tensor } from '../../index.js';

const bytesOf = (t: Tensor): number => (t.dtype === 'f64' ? 8 * t.shape.reduce((a, b) => a * b, 1) : byteSize(t.dtype, t.shape));

/** Counts the weight bytes of the experts each decode step actually routes to (an observer of the forward). */
export class DecodeTraffic {
  private expertBytes = 0;
  private steps = 0;
  private readonly fixedWeightBytes: number;

  constructor(private readonly model: OlmoeModel) {
    const { weights } = model;
    const row = bytesOf(weights.embed) / weights.embed.shape[0]!; // one embedding row per token
    let fixed = row + bytesOf(weights.finalNorm) + bytesOf(weights.lmHead);
    for (const layer of weights.layers) {
      const shared = layer.sharedExpert ? bytesOf(layer.sharedExpert.gate) + bytesOf(layer.sharedExpert.up) + bytesOf(layer.sharedExpert.down) : 0;
      fixed += [layer.inputNorm, layer.q, layer.k, layer.v, layer.o, layer.qNorm, layer.kNorm, layer.postNorm, layer.router].reduce((sum, t) => sum + bytesOf(t), shared);
    }
    this.fixedWeightBytes = fixed;
  }

  /** Pass to the decode steps' forward: each layer's distinct routed experts add their gate, up and down bytes. */
  readonly observer: RoutingObserver = (event) => {
    const experts = this.model.weights.layers[event.layer]!.experts;
    for (const id of new Set(event.expertIds)) this.expertBytes += bytesOf(experts.gate[id]!) + bytesOf(experts.up[id]!) + bytesOf(experts.down[id]!);
    if (event.layer === 0) this.steps += event.tokens;
  };

  /** Weight bytes per decoded token, averaged over the observed steps (the routed experts vary per token). */
  weightBytesPerToken(): number {
    return this.fixedWeightBytes + (this.steps ? this.expertBytes / this.steps : 0);
  }

  /** KV-cache bytes attention reads per token, averaged over decode positions [first, first + count) (in the model's cache type). */
  cacheBytesPerToken(first: number, count: number): number {
    const meanPositions = first + (count + 1) / 2; // the token at position p reads p + 1 cached positions
    return this.model.kvBytesPerPosition * meanPositions;
  }
}
