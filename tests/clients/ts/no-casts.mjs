// Lists what would make flow.ts typed only in appearance: `as` casts (but `as const`), `<T>x`
// assertions, non-null assertions (`x!`), `any`, `satisfies`, and @ts- comments that silence
// the checker. Reads the syntax tree with the pinned TypeScript compiler; prints one finding
// per line (none: the file is clean).
import { readFileSync } from "node:fs";
import ts from "typescript";

const file = process.argv[2];
const text = readFileSync(file, "utf8");
const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
const findings = [];

function report(node, what) {
  const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
  findings.push(`${file}:${line + 1}: ${what}: ${node.getText(source).slice(0, 60)}`);
}

function visit(node) {
  if (ts.isAsExpression(node) && node.type.getText(source) !== "const") report(node, "as cast");
  if (ts.isTypeAssertionExpression(node)) report(node, "type assertion");
  if (ts.isNonNullExpression(node)) report(node, "non-null assertion");
  if (ts.isSatisfiesExpression(node)) report(node, "satisfies");
  if (node.kind === ts.SyntaxKind.AnyKeyword) report(node, "any");
  ts.forEachChild(node, visit);
}

visit(source);
for (const match of text.matchAll(/@ts-(ignore|expect-error|nocheck)/g)) {
  const { line } = source.getLineAndCharacterOfPosition(match.index);
  findings.push(`${file}:${line + 1}: silenced checker: ${match[0]}`);
}
for (const finding of findings) console.log(finding);
