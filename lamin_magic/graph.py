"""The graph around a file: upstream (the run that made it, its notebook, the files that run
read, and so on) and downstream (the runs that read it and what they made), to a depth.
`lm.lineage` is in a module of another name: importing a submodule `lineage` would hide the
function behind the module on the package.

Each step is an indexed lookup (a file's run, a run's inputs, a file's readers, a run's
outputs), so the picture costs the size of the neighbourhood, not of the instance. Shown as
text in a terminal, as Mermaid in JupyterLab and Notebook 7 (a ```mermaid block in Markdown
output: no system binary needed), or as DOT for Graphviz.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import files
from . import instance as inst
from . import registry as reg
from .errors import InvalidArgumentError, printable

MAX_NODES = 200  # past this the picture is unreadable; the text says what was left out
FORMATS = ("text", "mermaid", "dot")


@dataclass
class Node:
    id: str  # the record's id
    kind: str  # file or run
    label: str  # iris@2, or "analysis (notebook) run 8Kz3..."


@dataclass
class Lineage:
    """Nodes and edges (made: run -> file; read: file -> run) around one file."""

    focus: str
    depth: int
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)
    truncated: bool = False

    def add(self, node: Node) -> bool:
        if node.id in self.nodes:
            return False
        if len(self.nodes) >= MAX_NODES:
            self.truncated = True
            return False
        self.nodes[node.id] = node
        return True

    # --- how it shows ------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.text()

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.mermaid()}\n```"

    def text(self) -> str:
        """Upstream then downstream, one arrow a line."""
        lines = [f"lineage of {printable(self.nodes[self.focus].label)} (depth {self.depth})"]
        for a, b in sorted(self.edges, key=lambda e: (self._name(e[0]), self._name(e[1]))):
            verb = "made" if self.nodes[a].kind == "run" else "read by"
            lines.append(f"  {self._name(a)} --{verb}--> {self._name(b)}")
        if not self.edges:
            lines.append("  (no run made or read it)")
        if self.truncated:
            lines.append(f"  ... cut at {MAX_NODES} nodes; ask for less depth")
        return "\n".join(lines)

    def mermaid(self) -> str:
        lines = ["flowchart LR"]
        for node in self.nodes.values():
            shape = ("[", "]") if node.kind == "file" else ("([", "])")
            text = mermaid_text(node.label)
            lines.append(f'  {_mermaid_id(node.id)}{shape[0]}"{text}"{shape[1]}')
        lines.append(f"  style {_mermaid_id(self.focus)} stroke-width:3px")
        for a, b in sorted(self.edges):
            lines.append(f"  {_mermaid_id(a)} --> {_mermaid_id(b)}")
        return "\n".join(lines)

    def dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for node in self.nodes.values():
            shape = "box" if node.kind == "file" else "ellipse"
            bold = ", penwidth=3" if node.id == self.focus else ""
            label = printable(node.label).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'  "{node.id}" [label="{label}", shape={shape}{bold}];')
        for a, b in sorted(self.edges):
            lines.append(f'  "{a}" -> "{b}";')
        lines.append("}")
        return "\n".join(lines)

    def render(self, format: str) -> str:
        if format not in FORMATS:
            raise InvalidArgumentError(f"format {format!r}: use one of {', '.join(FORMATS)}")
        return getattr(self, format)()

    def _name(self, node_id: str) -> str:
        return printable(self.nodes[node_id].label)


def mermaid_text(label: str) -> str:
    """A label Mermaid shows as it is: the characters it reads as markup (a quote, an
    entity, a tag, a directive) written as its #code; entities."""
    return "".join(f"#{ord(c)};" if c in '"#&<>%' else c for c in printable(label))


def _mermaid_id(record_id: str) -> str:
    return "n" + "".join(c if c.isalnum() else "_" for c in record_id)


def lineage(spec: str, depth: int = 3) -> Lineage:
    """The graph around NAME[@VERSION]: `depth` steps up and down (a step is a run)."""
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 20:
        raise InvalidArgumentError(f"depth must be a whole number from 1 to 20, not {depth!r}")
    name, version = files.parse_name_version(spec)
    inst.current()
    focus = files.get_file(name, version, include_trash=True)
    graph = Lineage(focus.id, depth)
    graph.add(Node(focus.id, "file", files.label(focus)))
    _walk(graph, [focus.id], depth, upstream=True)
    _walk(graph, [focus.id], depth, upstream=False)
    return graph


def _walk(graph: Lineage, start: list[str], depth: int, upstream: bool) -> None:
    """Breadth first from files: up, file -> the run that made it -> the files it read; down,
    file -> the runs that read it -> the files they made."""
    frontier = start
    for _ in range(depth):
        runs: list[str] = []
        for file_id, run_id in _file_runs(frontier, upstream):
            edge = (run_id, file_id) if upstream else (file_id, run_id)
            if _add_run(graph, run_id):
                runs.append(run_id)
            if run_id in graph.nodes:
                graph.edges.add(edge)
        frontier = []
        for run_id, file_id, label in _run_files(runs, upstream):
            edge = (file_id, run_id) if upstream else (run_id, file_id)
            if graph.add(Node(file_id, "file", label)):
                frontier.append(file_id)
            if file_id in graph.nodes:
                graph.edges.add(edge)
        if not frontier:
            return


def _file_runs(file_ids: list[str], upstream: bool) -> Iterable[tuple[str, str]]:
    """(file, run): the run that made each file, or the runs that read it."""
    sql = (
        "SELECT id, run_id FROM file WHERE run_id IS NOT NULL AND id IN ({})"
        if upstream
        else "SELECT file_id, run_id FROM run_input WHERE file_id IN ({})"
    )
    return reg.rows_in(sql, file_ids)


def _run_files(run_ids: list[str], upstream: bool) -> Iterable[tuple[str, str, str]]:
    """(run, file, label): the files each run read, or the files it made."""
    sql = (
        "SELECT i.run_id, f.id, f.name || '@' || f.version FROM run_input i"
        " JOIN file f ON f.id = i.file_id WHERE i.run_id IN ({})"
        if upstream
        else "SELECT run_id, id, name || '@' || version FROM file WHERE run_id IN ({})"
    )
    return reg.rows_in(sql, run_ids)


def _add_run(graph: Lineage, run_id: str) -> bool:
    if run_id in graph.nodes:
        return False
    row = reg.db.execute_sql(
        reg.sql(
            "SELECT t.name, t.type FROM run r JOIN transform t ON t.id = r.transform_id"
            " WHERE r.id = ?"
        ),
        (run_id,),
    ).fetchone()
    what = f"{row[0]} ({row[1]})" if row else "unknown"
    return graph.add(Node(run_id, "run", f"{what} run {run_id[:8]}"))
