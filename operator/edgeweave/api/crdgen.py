"""Generate structural CRD YAML from the pydantic models (`make crds`, `edgeweave crds`)."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from .. import GROUP, VERSION
from .resources import RESOURCES, Resource

# JSON Schema keywords the API server's structural schema accepts as they are.
_PASSTHROUGH = ("description", "pattern", "minLength", "maxLength", "minItems", "maxItems", "enum",
                "minimum", "maximum", "format", "minProperties", "maxProperties")


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        # The field's own description wins over the model docstring.
        target.update(extra)
        return target
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _deref(node, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _deref(node["allOf"][0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k != "allOf"}}
    if "anyOf" in node:
        # Optional[X] arrives as anyOf [X, null]; the API server stores absence, never null.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union in a structural schema: {node}")
        inner = _deref(options[0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k != "anyOf"}}
        node.pop("default", None) if node.get("default") is None else None

    out: dict[str, Any] = {}
    for key in _PASSTHROUGH:
        if key in node:
            out[key] = node[key]
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value

    typ = node.get("type")
    if typ is None and "enum" in node:
        typ = "string"
    if typ == "object" or "properties" in node:
        out["type"] = "object"
        if "properties" in node:
            props = {}
            for name, sub in node["properties"].items():
                props[name] = _structural(sub, defs)
            out["properties"] = props
            required = node.get("required", [])
            if required:
                out["required"] = list(required)
        addl = node.get("additionalProperties")
        if isinstance(addl, dict):
            out["additionalProperties"] = _structural(addl, defs)
    elif typ == "array":
        out["type"] = "array"
        out["items"] = _structural(node.get("items", {}), defs)
    elif typ in ("string", "integer", "number", "boolean"):
        out["type"] = typ
    else:
        raise ValueError(f"no structural type for schema node: {node}")

    if "default" in node and node["default"] is not None:
        out["default"] = node["default"]
    return out


def _fill_model_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Fields built with default_factory carry no default in JSON Schema; give them the model's own.

    The API server then stores complete objects (what `kubectl get -o yaml` shows is what the operator
    uses) and CEL rules can read nested fields without has() guards.
    """
    props = schema.get("properties", {})
    for name, info in model.model_fields.items():
        alias = info.alias or name
        sub = props.get(alias)
        if sub is None:
            continue
        if info.default_factory is not None:
            value = info.default_factory()  # type: ignore[call-arg]
            sub["default"] = value.wire() if isinstance(value, BaseModel) else value
        for inner in _model_types(info.annotation):
            target = sub["items"] if sub.get("type") == "array" else sub
            _fill_model_defaults(inner, target)


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [t for arg in get_args(annotation) for t in _model_types(arg)]


def openapi_schema(model: type[BaseModel], *, defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    if defaults:
        _fill_model_defaults(model, schema)
    else:
        _strip_defaults(schema)
    return schema


def _strip_defaults(node: dict[str, Any]) -> None:
    node.pop("default", None)
    for sub in node.get("properties", {}).values():
        _strip_defaults(sub)
    if "items" in node:
        _strip_defaults(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        _strip_defaults(node["additionalProperties"])


def crd(resource: Resource) -> dict[str, Any]:
    spec_schema = openapi_schema(resource.spec, defaults=True)
    spec_schema.pop("default", None)
    status_schema = openapi_schema(resource.status, defaults=False)
    status_schema["description"] = f"Observed state of the {resource.kind}, written by the operator."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.crd_name, "labels": {"app.kubernetes.io/part-of": "edgeweave"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if resource.namespaced else "Cluster",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": ["edgeweave"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(resource.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": resource.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


# YAML 1.1 readers (kubectl among them) take a bare y/n/on/off as a boolean; quote them.
_YAML11_BOOLS = {"y", "Y", "n", "N", "yes", "no", "on", "off", "Yes", "No", "On", "Off"}


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if value in _YAML11_BOOLS else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = "# Generated by `make crds` from operator/edgeweave/api. Do not edit by hand.\n"


def render(resource: Resource) -> str:
    return HEADER + yaml.dump(crd(resource), Dumper=_Dumper, sort_keys=False, width=120)


def rendered() -> dict[str, str]:
    return {f"{GROUP}_{r.plural}.yaml": render(r) for r in RESOURCES}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgeweave crds")
    parser.add_argument("--out", action="append", default=[], help="directory to write into (repeatable)")
    parser.add_argument("--chart", action="append", default=[], help="also write into this directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if files on disk differ")
    args = parser.parse_args(argv)
    dirs = [Path(d) for d in args.out + args.chart]
    files = rendered()
    if not dirs:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    drift = []
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = d / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    drift.append(str(path))
            else:
                path.write_text(text)
    if drift:
        print("CRDs drifted from the models, run `make crds`:", *drift, sep="\n  ", file=sys.stderr)
        return 1
    return 0
