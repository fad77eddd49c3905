/**
 * Headless figure rendering shared by every layer that draws (training curves, evaluation results, routing
 * analyses): a Vega-Lite spec → Vega → SVG, and resvg → PNG. Specs are plain data; each layer builds its own.
 */
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export type Spec = TopLevelSpec;

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const FONT = { config: { font: 'DejaVu Sans, Liberation Sans, Arial, sans-serif', view: { stroke: null } } } as const;

export async function renderSvg(spec: Spec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

export function renderPng(svg: string, scale = 2): Uint8Array {
  return new Resvg(svg, { fitTo: { mode: 'zoom', value: scale }, font: { loadSystemFonts: true }, background: 'white' }).render().asPng();
}

/** A chart body (data, marks, facets, layers) with the shared schema, font and title. */
export function titledSpec(title: string, subtitle: string | string[], body: object): Spec {
  return { $schema: SCHEMA, ...FONT, title: { text: title, subtitle }, ...body } as Spec;
}
