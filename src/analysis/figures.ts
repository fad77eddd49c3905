/**
 * Plot specs (Vega-Lite) for the routing analyses, in the manner of the OLMoE paper's figures. Specs are plain
 * data built from metric results; src/plot/figures.ts renders them.
 */
import { titledSpec, type Spec } from '../plot/figures.js';

/** Line charts over a category, one panel per k: the shape of Figures 5 and 6. */
function kPanels(title: string, subtitle: string, rows: object[], x: object, y: object, color: object): Spec {
  return titledSpec(title, subtitle, {
    data: { values: rows },
    facet: { column: { field: 'k', type: 'nominal', title: null } },
    spec: { width: 320, height: 240, mark: { type: 'line', point: true }, encoding: { x, y, color } },
  });
}

const SHARE_AXIS = { type: 'quantitative', scale: { domain: [0, 1] }, axis: { format: '%' } } as const;

/** Figure 5: router saturation of each checkpoint against the final one, per layer (k = 1 and top-k). */
export function saturationSpec(rows: { checkpoint: string; order: number; layer: number; k: string; saturation: number }[]): Spec {
  return kPanels('Router saturation', 'share of the final checkpoint\'s experts already chosen at each checkpoint, same tokens', rows,
    { field: 'checkpoint', type: 'ordinal', sort: { field: 'order' }, title: 'checkpoint' },
    { field: 'saturation', ...SHARE_AXIS, title: 'saturation' },
    { field: 'layer', type: 'ordinal', scale: { scheme: 'viridis' } });
}

/** Figure 7: per expert, the share of a domain's tokens routed to it, against the uniform baseline k/E. */
export function domainSpec(rows: { domain: string; expert: number; value: number }[], uniform: number, title: string): Spec {
  return titledSpec(title, `dashed: uniform routing (k/E = ${uniform.toFixed(3)})`, {
    width: 900,
    height: 220,
    layer: [
      {
        data: { values: rows },
        mark: 'bar',
        encoding: {
          x: { field: 'expert', type: 'ordinal', title: 'expert', axis: { labelFontSize: 8 } },
          xOffset: { field: 'domain', type: 'nominal' },
          y: { field: 'value', type: 'quantitative', axis: { format: '%' }, title: 'tokens of the domain routed here' },
          color: { field: 'domain', type: 'nominal', scale: { scheme: 'tableau10' } },
          tooltip: [{ field: 'domain' }, { field: 'expert' }, { field: 'value', format: '.3f' }],
        },
      },
      { data: { values: [{ uniform }] }, mark: { type: 'rule', strokeDash: [4, 3], color: '#333' }, encoding: { y: { field: 'uniform', type: 'quantitative' } } },
    ],
  });
}

/** Figure 6: vocabulary specialization per layer, for input, predicted and ground-truth output tokens. */
export function vocabularySpec(rows: { layer: number; kind: string; k: string; value: number }[]): Spec {
  return kPanels('Vocabulary specialization', 'mean over token ids of the share of a token\'s occurrences that its most specialized expert takes', rows,
    { field: 'layer', type: 'ordinal' },
    { field: 'value', ...SHARE_AXIS, title: 'specialization' },
    { field: 'kind', type: 'nominal', title: 'token', scale: { scheme: 'set1' } });
}

/** Figure H2: co-activation among the most co-activated experts of a layer. */
export function coActivationSpec(experts: number[], matrix: number[][], layer: number): Spec {
  const values = experts.flatMap((from, i) => experts.map((to, j) => ({ from: `E${from}`, to: `E${to}`, value: i === j ? null : matrix[i]![j] })));
  const order = experts.map((e) => `E${e}`);
  return titledSpec(`Expert co-activation, layer ${layer}`, 'row expert → share of its tokens that also go to the column expert', {
    data: { values },
    width: 14 * experts.length,
    height: 14 * experts.length,
    mark: 'rect',
    encoding: {
      x: { field: 'to', type: 'ordinal', sort: order, title: null, axis: { labelFontSize: 8 } },
      y: { field: 'from', type: 'ordinal', sort: order, title: null, axis: { labelFontSize: 8 } },
      color: { field: 'value', type: 'quantitative', scale: { scheme: 'blues', domain: [0, 1] }, title: 'co-activation' },
      tooltip: [{ field: 'from' }, { field: 'to' }, { field: 'value', format: '.3f' }],
    },
  });
}

/** Expert load: share of routed slots per layer and expert (uniform = 1/E). */
export function loadSpec(rows: { layer: number; expert: number; share: number }[], experts: number): Spec {
  return titledSpec('Expert load', `share of routed slots per layer (uniform: 1/${experts} = ${(1 / experts).toFixed(4)})`, {
    data: { values: rows },
    width: Math.max(300, 12 * experts),
    height: 12 * (Math.max(...rows.map((r) => r.layer)) + 1),
    mark: 'rect',
    encoding: {
      x: { field: 'expert', type: 'ordinal', axis: { labelFontSize: 8 } },
      y: { field: 'layer', type: 'ordinal' },
      color: { field: 'share', type: 'quantitative', scale: { scheme: 'viridis' } },
      tooltip: [{ field: 'layer' }, { field: 'expert' }, { field: 'share', format: '.4f' }],
    },
  });
}
