"""Chat templates from ``tokenizer.chat_template``.

Rendered with jinja2's sandbox when jinja2 is installed (exactly what transformers does). Without
it, a small interpreter covers the subset chat templates of small models use: ``for``/``if``/
``elif``/``else``/``set``, ``{{ }}`` output, ``-`` whitespace control, ``loop.*``, ``is defined``,
``~``, ``trim`` and literals. Anything outside that subset raises :class:`GenerationError` naming
it, so a template is never rendered wrongly in silence.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping, Sequence

from .._errors import GenerationError

__all__ = ["render_chat", "normalize_messages"]

_ROLES = ("system", "user", "assistant", "tool")


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise GenerationError(f"message {i} must be a mapping with 'role' and 'content', got {m!r}")
        if not isinstance(m["content"], str):
            raise GenerationError(f"message {i}: content must be str, got {type(m['content']).__name__}")
        out.append(dict(m))
    if not out:
        raise GenerationError("messages is empty")
    return out


def render_chat(template: str | None, messages, add_generation_prompt: bool = True, **extra) -> str:
    msgs = normalize_messages(messages)
    if not template:
        raise GenerationError("this model has no chat template (tokenizer.chat_template); pass a plain string prompt")
    ctx = {"messages": msgs, "add_generation_prompt": add_generation_prompt, **extra}
    try:
        import jinja2.sandbox
    except ImportError:
        return _MiniTemplate(template).render(ctx)

    def raise_exception(msg):
        raise GenerationError(f"chat template: {msg}")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(**ctx)
    except jinja2.TemplateError as exc:
        raise GenerationError(f"chat template failed: {exc}") from exc


# --- minimal Jinja subset -------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"({%-?.*?-?%}|{{-?.*?-?}}|{#.*?#})", re.S)


class _Loop:
    def __init__(self, index0: int, length: int):
        self.index0, self.length = index0, length
        self.index = index0 + 1
        self.first = index0 == 0
        self.last = index0 == length - 1
        self.revindex = length - index0
        self.revindex0 = length - index0 - 1


class _Undefined:
    def __bool__(self):
        return False

    def __str__(self):
        return ""


_UNDEF = _Undefined()
_FILTERS = {"trim": lambda s: str(s).strip(), "length": len, "upper": lambda s: str(s).upper(), "lower": lambda s: str(s).lower()}


def _to_python(expr: str) -> str:
    # Rewrite the few Jinja spellings that differ from Python, outside string literals only.
    parts = re.split(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", expr)
    for i in range(0, len(parts), 2):
        p = parts[i]
        p = re.sub(r"\bis\s+not\s+defined\b", " is _UNDEF", p)
        p = re.sub(r"\bis\s+defined\b", " is not _UNDEF", p)
        p = re.sub(r"\btrue\b", "True", p)
        p = re.sub(r"\bfalse\b", "False", p)
        p = re.sub(r"\bnone\b", "None", p)
        p = p.replace("~", "+")
        p = re.sub(r"\|\s*(\w+)", r"|_F_\1", p)
        parts[i] = p
    for i in range(1, len(parts), 2):
        # Jinja string literals may span lines; Python's may not.
        parts[i] = parts[i].replace("\n", "\\n").replace("\r", "\\r")
    return "".join(parts)


class _Eval(ast.NodeVisitor):
    def __init__(self, scope):
        self.scope = scope

    def ev(self, node):
        m = getattr(self, "e_" + type(node).__name__, None)
        if m is None:
            raise GenerationError(f"chat template uses an unsupported expression ({type(node).__name__}); install jinja2")
        return m(node)

    def e_Expression(self, n):
        return self.ev(n.body)

    def e_Constant(self, n):
        return n.value

    def e_Name(self, n):
        if n.id == "_UNDEF":
            return _UNDEF
        for s in reversed(self.scope):
            if n.id in s:
                return s[n.id]
        return _UNDEF

    def e_Attribute(self, n):
        v = self.ev(n.value)
        if isinstance(v, Mapping):
            return v.get(n.attr, _UNDEF)
        return getattr(v, n.attr, _UNDEF)

    def e_Subscript(self, n):
        v = self.ev(n.value)
        if isinstance(n.slice, ast.Slice):
            s = n.slice
            return v[slice(*(None if x is None else self.ev(x) for x in (s.lower, s.upper, s.step)))]
        k = self.ev(n.slice)
        try:
            return v[k]
        except (KeyError, IndexError, TypeError):
            return _UNDEF

    def e_BoolOp(self, n):
        if isinstance(n.op, ast.And):
            v = True
            for x in n.values:
                v = self.ev(x)
                if not v:
                    return v
            return v
        v = False
        for x in n.values:
            v = self.ev(x)
            if v:
                return v
        return v

    def e_UnaryOp(self, n):
        if isinstance(n.op, ast.Not):
            return not self.ev(n.operand)
        if isinstance(n.op, ast.USub):
            return -self.ev(n.operand)
        raise GenerationError("chat template: unsupported unary operator")

    def e_BinOp(self, n):
        if isinstance(n.op, ast.BitOr) and isinstance(n.right, ast.Name) and n.right.id.startswith("_F_"):
            name = n.right.id[3:]
            if name not in _FILTERS:
                raise GenerationError(f"chat template uses filter {name!r}, not supported without jinja2")
            return _FILTERS[name](self.ev(n.left))
        a, b = self.ev(n.left), self.ev(n.right)
        if isinstance(n.op, ast.Add):
            if isinstance(a, str) or isinstance(b, str):
                return str(a) + str(b)
            return a + b
        if isinstance(n.op, ast.Sub):
            return a - b
        if isinstance(n.op, ast.Mod):
            return a % b
        raise GenerationError("chat template: unsupported binary operator")

    def e_Compare(self, n):
        left = self.ev(n.left)
        for op, right_node in zip(n.ops, n.comparators):
            right = self.ev(right_node)
            ok = {
                ast.Eq: lambda a, b: a == b,
                ast.NotEq: lambda a, b: a != b,
                ast.Lt: lambda a, b: a < b,
                ast.LtE: lambda a, b: a <= b,
                ast.Gt: lambda a, b: a > b,
                ast.GtE: lambda a, b: a >= b,
                ast.In: lambda a, b: a in b,
                ast.NotIn: lambda a, b: a not in b,
                ast.Is: lambda a, b: a is b,
                ast.IsNot: lambda a, b: a is not b,
            }[type(op)](left, right)
            if not ok:
                return False
            left = right
        return True

    def e_List(self, n):
        return [self.ev(x) for x in n.elts]

    e_Tuple = e_List

    def e_Dict(self, n):
        return {self.ev(k): self.ev(v) for k, v in zip(n.keys, n.values)}

    def e_IfExp(self, n):
        return self.ev(n.body) if self.ev(n.test) else self.ev(n.orelse)


class _MiniTemplate:
    def __init__(self, source: str):
        self.nodes = self._parse(self._lex(source))

    @staticmethod
    def _lex(src: str):
        items = []
        for piece in _TOKEN_RE.split(src):
            if not piece:
                continue
            if piece.startswith("{#"):
                items.append(("comment", "", piece.startswith("{#-"), piece.endswith("-#}")))
            elif piece.startswith("{%") or piece.startswith("{{"):
                kind = "stmt" if piece[1] == "%" else "expr"
                lstrip, rstrip = piece[2] == "-", piece[-3] == "-"
                body = piece[2 + lstrip : len(piece) - 2 - rstrip].strip()
                items.append((kind, body, lstrip, rstrip))
            else:
                items.append(("text", piece, False, False))
        # Apply '-' whitespace control and jinja's trim_blocks/lstrip_blocks (what transformers enables).
        for i, (kind, body, lstrip, rstrip) in enumerate(items):
            if kind == "text":
                continue
            if i > 0 and items[i - 1][0] == "text":
                t = items[i - 1][1]
                if lstrip:
                    t = t.rstrip()
                elif kind in ("stmt", "comment"):
                    t = re.sub(r"(^|\n)[ \t]*$", r"\1", t)
                items[i - 1] = ("text", t, False, False)
            if i + 1 < len(items) and items[i + 1][0] == "text":
                t = items[i + 1][1]
                if rstrip:
                    t = t.lstrip()
                elif kind in ("stmt", "comment") and t.startswith("\n"):
                    t = t[1:]
                items[i + 1] = ("text", t, False, False)
        return [(k, b) for k, b, _, _ in items if k != "comment"]

    def _parse(self, items):
        pos = 0

        def block(ends):
            nonlocal pos
            out = []
            while pos < len(items):
                kind, body = items[pos]
                if kind == "stmt":
                    word = body.split(None, 1)[0]
                    if word in ends:
                        return out, word, body
                    pos += 1
                    if word == "for":
                        m = re.match(r"for\s+(\w+(?:\s*,\s*\w+)*)\s+in\s+(.+)$", body, re.S)
                        if not m:
                            raise GenerationError(f"chat template: cannot parse {body!r}")
                        inner, _, _ = block(("endfor",))
                        pos += 1
                        out.append(("for", [v.strip() for v in m.group(1).split(",")], self._compile(m.group(2)), inner))
                    elif word == "if":
                        branches = []
                        cond = body[2:]
                        while True:
                            inner, end, ebody = block(("elif", "else", "endif"))
                            pos += 1
                            branches.append((self._compile(cond), inner))
                            if end == "elif":
                                cond = ebody[4:]
                            elif end == "else":
                                inner, _, _ = block(("endif",))
                                pos += 1
                                branches.append((None, inner))
                                break
                            else:
                                break
                        out.append(("if", branches))
                    elif word == "set":
                        m = re.match(r"set\s+(\w+)\s*=\s*(.+)$", body, re.S)
                        if not m:
                            raise GenerationError(f"chat template: unsupported set statement {body!r}; install jinja2")
                        out.append(("set", m.group(1), self._compile(m.group(2))))
                    else:
                        raise GenerationError(f"chat template uses '{{% {word} %}}', not supported without jinja2")
                elif kind == "expr":
                    pos += 1
                    out.append(("expr", self._compile(body)))
                else:
                    pos += 1
                    out.append(("text", body))
            if ends:
                raise GenerationError(f"chat template: missing {' / '.join(ends)}")
            return out, None, None

        nodes, _, _ = block(())
        return nodes

    @staticmethod
    def _compile(expr: str):
        try:
            return ast.parse(_to_python(expr.strip()), mode="eval")
        except SyntaxError as exc:
            raise GenerationError(f"chat template: cannot parse expression {expr!r}; install jinja2") from exc

    def render(self, ctx: Mapping[str, Any]) -> str:
        out: list[str] = []
        self._run(self.nodes, [dict(ctx)], out)
        return "".join(out)

    def _run(self, nodes, scope, out):
        ev = _Eval(scope)
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "expr":
                v = ev.ev(node[1])
                out.append("" if v is None else str(v))
            elif kind == "set":
                scope[-1][node[1]] = ev.ev(node[2])
            elif kind == "if":
                for cond, inner in node[1]:
                    if cond is None or ev.ev(cond):
                        self._run(inner, scope, out)
                        break
            elif kind == "for":
                names, seq_expr, inner = node[1], node[2], node[3]
                seq = list(ev.ev(seq_expr) or [])
                for i, item in enumerate(seq):
                    frame = {"loop": _Loop(i, len(seq))}
                    if len(names) == 1:
                        frame[names[0]] = item
                    else:
                        frame.update(zip(names, item))
                    scope.append(frame)
                    try:
                        self._run(inner, scope, out)
                    finally:
                        scope.pop()
