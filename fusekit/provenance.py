"""What fusekit writes into a fused model's ``metadata_props``, and reads back from it.

- ``fusekit.provenance``: a JSON object keyed by fused node name, one record per node (the
  fusion that made it, its variant, the chain of fusions, the original nodes it replaced and the
  constants it absorbed: ``Fused.to_dict``); a model fused again keeps its earlier records;
- ``fusekit.target``: the target it was fused for;
- ``fusekit.pack``: for a packed model, the mask input and each output's kind, "tokens" or
  "derived" (what ``verify`` compares at the valid tokens only);
- ``<target>.runtime_options.<KEY>``: a compile option the target's runtime should use for the
  forms fused (``Fusion.runtime_options``), e.g. ``openvino.runtime_options.DYNAMIC_QUANTIZATION_GROUP_SIZE``;
  fusekit's OpenVINO backend and ``-o model.xml`` carry them into OpenVINO's ``runtime_options``.
"""
from __future__ import annotations

import json

import onnx

PROVENANCE_KEY = "fusekit.provenance"
TARGET_KEY = "fusekit.target"
PACK_KEY = "fusekit.pack"


def records(model: onnx.ModelProto) -> dict[str, dict]:
    """The provenance records ``model`` carries, by fused node name ({} if fusekit did not write it)."""
    text = next((p.value for p in model.metadata_props if p.key == PROVENANCE_KEY), None)
    return json.loads(text) if text else {}


def metadata(original: onnx.ModelProto, fused: list, target: str, packed: dict | None,
             options: dict[str, str] | None = None) -> dict[str, str]:
    """``original``'s metadata with this run's: the records of ``fused`` (``Fused``) added to the
    ones it carried, the target, how it was packed, and the runtime ``options`` its forms want."""
    known = records(original)
    known.update({f.node: f.to_dict() for f in fused if f.node})  # a bypass leaves no node
    props = {p.key: p.value for p in original.metadata_props}
    props.update({PROVENANCE_KEY: json.dumps(known), TARGET_KEY: target})
    if packed:
        props[PACK_KEY] = json.dumps(packed)
    props.update({f"{target}.runtime_options.{key}": value for key, value in (options or {}).items()})
    return props


def runtime_options(model: onnx.ModelProto, runtime: str = "openvino") -> dict[str, str]:
    """The compile options ``model`` asks ``runtime`` for (see ``metadata``)."""
    prefix = f"{runtime}.runtime_options."
    return {p.key.removeprefix(prefix): p.value for p in model.metadata_props if p.key.startswith(prefix)}
