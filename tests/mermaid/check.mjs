// Parses Mermaid diagrams with the real `mermaid` package, for tests/mermaid.rs.
//
// stdin: a JSON array of {"name": ..., "text": ...}.
// stdout: a JSON array, in the same order, of
//   {"name", "ok", "type", "error", "graph"}
// where `graph`, for a flowchart that parsed, is what Mermaid understood:
//   {"nodes": [{"id", "text", "tags"}], "subgraphs": [{"id", "title", "tags", "nodes"}],
//    "edges": [{"from", "to", "label", "stroke"}]}
// `text`/`title` are a label as a reader sees it (entity codes decoded,
// markup parsed as HTML, its text content, a line break as `\n`) and `tags` the HTML elements the
// label holds, so a test can tell that a label carried no markup in.
// Exits 0 when every diagram was checked, whatever the verdicts; non-zero
// only when the checker itself could not run.
//
// Mermaid needs a DOM (DOMPurify is set up when mermaid loads), so a jsdom
// window is made global before mermaid is imported.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>', { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });

// Mermaid hides `#name;` / `#35;` entity codes behind these markers while it
// parses and turns them into HTML entities when it draws the label.
function asShown(label) {
  const html = String(label ?? '')
    .replace(/ﬂ°°/g, '&#')
    .replace(/ﬂ°/g, '&')
    .replace(/¶ß/g, ';');
  const el = document.createElement('div');
  el.innerHTML = html;
  const tags = [...el.querySelectorAll('*')].map((e) => e.tagName.toLowerCase());
  for (const br of el.querySelectorAll('br')) br.replaceWith('\n');
  return { text: el.textContent, tags };
}

async function structure(text) {
  const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
  const db = diagram.db;
  if (typeof db.getVertices !== 'function') return null;
  const nodes = [...db.getVertices().values()].map((v) => {
    const shown = asShown(v.text);
    return { id: v.id, text: shown.text, tags: shown.tags };
  });
  const subgraphs = db.getSubGraphs().map((s) => {
    const shown = asShown(s.title);
    return { id: s.id, title: shown.text, tags: shown.tags, nodes: s.nodes };
  });
  const edges = db.getEdges().map((e) => ({
    from: e.start,
    to: e.end,
    label: e.text ?? '',
    stroke: e.stroke ?? '',
  }));
  return { nodes, subgraphs, edges };
}

let input = '';
for await (const chunk of process.stdin) input += chunk;
const diagrams = JSON.parse(input);

const results = [];
for (const { name, text } of diagrams) {
  try {
    const parsed = await mermaid.parse(text);
    results.push({ name, ok: true, type: parsed.diagramType, error: null, graph: await structure(text) });
  } catch (e) {
    const error = String(e && e.message ? e.message : e);
    results.push({ name, ok: false, type: null, error, graph: null });
  }
}
process.stdout.write(JSON.stringify(results) + '\n');
