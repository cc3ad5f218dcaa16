"""Rewrite a CUDA C kernel so that a small launch computes one slice of the full grid.

The kernel author writes an ordinary kernel for the full grid. The rewrite (mekong-cuda's sub-grid
pass and Kernelet's offset slicing are the precedents) turns the entry kernel into one that takes
four extra parameters

    unsigned long long __ew_off, unsigned int __ew_gx, unsigned int __ew_gy, unsigned int __ew_gz

and is launched as a 1-D grid of (end - start) blocks with __ew_off = start. Inside its body
`blockIdx` means the block's coordinates in the full grid (recovered from __ew_off + blockIdx.x,
x fastest, as grid.py numbers them) and `gridDim` means the full grid. It does so with a
`#define` placed after the preamble, so macros defined earlier that mention blockIdx or gridDim
expand correctly at their use inside the kernel.

What it refuses (RewriteError), rather than produce a kernel that computes the wrong blocks:
blockIdx/gridDim (or macros that use them) referenced outside the entry kernel, e.g. in a __device__
helper — pass the value as an argument instead; a templated or missing entry kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXTRA_PARAMS = "unsigned long long __ew_off, unsigned int __ew_gx, unsigned int __ew_gy, unsigned int __ew_gz"

PREAMBLE = (
    "const unsigned long long __ew_lin = __ew_off + (unsigned long long)blockIdx.x;"
    " const uint3 __ew_bi = {(unsigned int)(__ew_lin % __ew_gx),"
    " (unsigned int)((__ew_lin / __ew_gx) % __ew_gy),"
    " (unsigned int)(__ew_lin / ((unsigned long long)__ew_gx * __ew_gy))};"
    " const dim3 __ew_gd(__ew_gx, __ew_gy, __ew_gz);"
)

INDEX_NAMES = ("blockIdx", "gridDim")


class RewriteError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, comment, string, pp (preprocessor line), punct, space, number
    text: str
    start: int
    end: int


_TOKEN = re.compile(
    r"""(?P<comment>//[^\n]*|/\*.*?\*/)
      |(?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
      |(?P<pp>\#(?:\\\n|[^\n])*)
      |(?P<ident>[A-Za-z_]\w*)
      |(?P<number>\d[\w.]*)
      |(?P<space>\s+)
      |(?P<punct>.)""",
    re.VERBOSE | re.DOTALL,
)


def tokenize(source: str) -> list[Token]:
    return [Token(m.lastgroup or "punct", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(source)]


@dataclass(frozen=True, slots=True)
class KernelSpan:
    name: str
    global_tok: int  # index of the __global__ token
    params_open: int  # index of "(" of the parameter list
    params_close: int
    body_open: int  # index of "{" of the body
    body_close: int


def _code(tokens: list[Token]) -> list[int]:
    """Indices of the tokens that are code (not spaces, comments or preprocessor lines)."""
    return [i for i, t in enumerate(tokens) if t.kind not in ("space", "comment", "pp")]


def _match(tokens: list[Token], code: list[int], pos: int, open_: str, close: str) -> int:
    """Position in `code` of the bracket closing the one at code[pos]."""
    depth = 0
    for k in range(pos, len(code)):
        text = tokens[code[k]].text
        if text == open_:
            depth += 1
        elif text == close:
            depth -= 1
            if depth == 0:
                return k
    raise RewriteError(f"unbalanced {open_}{close} in kernel source")


def find_kernels(tokens: list[Token]) -> list[KernelSpan]:
    """Every __global__ function definition: its name, parameter list and body."""
    code = _code(tokens)
    spans: list[KernelSpan] = []
    k = 0
    while k < len(code):
        if tokens[code[k]].text != "__global__":
            k += 1
            continue
        # The name is the identifier right before the first "(" that is not an attribute's argument
        # list (__launch_bounds__(...), __attribute__((...))).
        j = k + 1
        while j < len(code):
            text = tokens[code[j]].text
            if text in ("__launch_bounds__", "__attribute__", "__declspec"):
                j = _match(tokens, code, j + 1, "(", ")") + 1
                continue
            if text == "(" or text == ";":
                break
            j += 1
        if j >= len(code) or tokens[code[j]].text != "(":
            k += 1
            continue
        name_tok = tokens[code[j - 1]]
        if name_tok.text == ">":
            raise RewriteError("templated kernels are not supported: instantiate a plain extern \"C\" kernel")
        close = _match(tokens, code, j, "(", ")")
        nxt = close + 1
        if nxt < len(code) and tokens[code[nxt]].text == "{":
            body_close = _match(tokens, code, nxt, "{", "}")
            spans.append(KernelSpan(name_tok.text, code[k], code[j], code[close], code[nxt], code[body_close]))
            k = body_close + 1
        else:
            k = close + 1  # a declaration, not a definition
    return spans


def _tainted_names(tokens: list[Token]) -> set[str]:
    """blockIdx, gridDim and every macro whose definition mentions one of them (to a fixpoint)."""
    defines: dict[str, set[str]] = {}
    for t in tokens:
        if t.kind != "pp":
            continue
        m = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)(.*)", t.text, re.DOTALL)
        if m:
            defines[m.group(1)] = set(re.findall(r"[A-Za-z_]\w*", m.group(2)))
    tainted = set(INDEX_NAMES)
    changed = True
    while changed:
        changed = False
        for name, uses in defines.items():
            if name not in tainted and uses & tainted:
                tainted.add(name)
                changed = True
    return tainted


def _has_extern_c(tokens: list[Token], global_tok: int) -> bool:
    code = [i for i in _code(tokens) if i < global_tok]
    # `extern "C" __global__` or `extern "C" static __global__`, or inside an `extern "C" {` block.
    tail = [tokens[i].text for i in code[-3:]]
    if tail[-2:] == ["extern", '"C"'] or tail == ["extern", '"C"', "static"]:
        return True
    depth_stack: list[bool] = []
    for n, i in enumerate(code):
        text = tokens[i].text
        if text == "{":
            is_linkage = n >= 2 and tokens[code[n - 2]].text == "extern" and tokens[code[n - 1]].text == '"C"'
            depth_stack.append(is_linkage)
        elif text == "}" and depth_stack:
            depth_stack.pop()
    return any(depth_stack)


def _declaration_start(tokens: list[Token], global_tok: int) -> int:
    """First token of the declaration holding `__global__` (after storage-class specifiers)."""
    code = [i for i in _code(tokens) if i < global_tok]
    start = global_tok
    for i in reversed(code):
        if tokens[i].text in ("static", "inline", "__forceinline__", "__noinline__"):
            start = i
        else:
            break
    return start


@dataclass(frozen=True, slots=True)
class Rewritten:
    source: str
    entry: str


def rewrite(source: str, entry: str) -> Rewritten:
    """The slice-launchable form of `source`'s __global__ kernel `entry` (see the module docstring)."""
    if "__ew_" in source:
        raise RewriteError("identifiers starting with __ew_ are reserved for the slice rewrite")
    tokens = tokenize(source)
    kernels = find_kernels(tokens)
    matches = [k for k in kernels if k.name == entry]
    if not matches:
        found = ", ".join(k.name for k in kernels) or "none"
        raise RewriteError(f"no __global__ kernel named {entry!r} (found: {found})")
    if len(matches) > 1:
        raise RewriteError(f"kernel {entry!r} is defined more than once (overloads are not supported)")
    kern = matches[0]

    tainted = _tainted_names(tokens)
    other_bodies = [(k.body_open, k.body_close) for k in kernels if k is not kern]
    for i, t in enumerate(tokens):
        if t.kind != "ident" or t.text not in tainted:
            continue
        if kern.body_open < i < kern.body_close:
            continue
        if any(a < i < b for a, b in other_bodies):
            continue  # another kernel: never launched by the slice runtime, so left as written
        line = source.count("\n", 0, t.start) + 1
        raise RewriteError(
            f"line {line}: {t.text} is used outside kernel {entry!r}; slices renumber blocks only inside "
            "the entry kernel, so pass the index to helpers as an argument")

    params = source[tokens[kern.params_open].end:tokens[kern.params_close].start]
    has_params = bool(params.strip()) and params.strip() != "void"
    new_params = f"{params}, {EXTRA_PARAMS}" if has_params else EXTRA_PARAMS
    g = tokens[_declaration_start(tokens, kern.global_tok)].start
    extern = "" if _has_extern_c(tokens, kern.global_tok) else 'extern "C" '
    body_open = tokens[kern.body_open].end
    body_close = tokens[kern.body_close].start
    text = (
        source[:g] + extern + source[g:tokens[kern.params_open].end] + new_params
        + source[tokens[kern.params_close].start:body_open]
        + "\n" + PREAMBLE + "\n#define blockIdx __ew_bi\n#define gridDim __ew_gd\n"
        + source[body_open:body_close]
        + "\n#undef blockIdx\n#undef gridDim\n"
        + source[body_close:]
    )
    return Rewritten(source=text, entry=entry)
