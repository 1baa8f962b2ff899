"""Validate an API-format ComfyUI graph against node schemas, the way `POST /prompt` does.

This follows ComfyUI 0.33's `execution.validate_prompt` and `validate_inputs`: only output nodes
and what they depend on are checked; every class must exist; every required input must be
present; links must be `[node_id, slot]` pairs pointing at an existing output of a matching
type; literal values are converted to the input's type and checked against min, max and the
enum. The result has ComfyUI's shape (`error` plus `node_errors`), so a double of ComfyUI can
answer `/prompt` with it and the worker's error formatting sees the same payload either way.

Model-file enums are empty in a schema taken from a ComfyUI with no models installed; pass
`choices` to check those inputs against the files the project provides instead.

Used by the ComfyUI double and the workflow's tests; the worker itself never validates a graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wan_worker.node_classes import COMFY_LISTED_MODEL_INPUTS

ObjectInfo = Mapping[str, Any]
Prompt = Mapping[str, Any]
#: (class_type, input_name) -> the values allowed there, replacing the schema's enum.
Choices = Mapping[tuple[str, str], list[Any]]
#: (class_type, input_name) -> a node's own VALIDATE_INPUTS for that input: None when the value
#: is fine, else the reason (reported as `custom_validation_failed`, as ComfyUI does).
CustomChecks = Mapping[tuple[str, str], Callable[[Any], str | None]]


@dataclass
class ValidationResult:
    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[str]:
        """One line per problem: `node <id> (<class>): <message>: <details>`."""
        lines: list[str] = []
        for node_id, entry in self.node_errors.items():
            for err in entry["errors"]:
                lines.append(
                    f"node {node_id} ({entry['class_type']}): {err['message']}: {err['details']}"
                )
        if not lines and self.error is not None:
            lines.append(f"{self.error['message']}: {self.error['details']}")
        return lines


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's `validate_node_input` in non-strict mode: any overlap of comma-separated types."""
    if received == expected:
        return True
    if received in ("*", "COMFY_MATCHTYPE_V3") or expected in ("*", "COMFY_MATCHTYPE_V3"):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    if "*" in got or "*" in want:
        return True
    return bool(got & want)


def _input_spec(schema: Mapping[str, Any], name: str) -> tuple[Any, str, dict[str, Any]] | None:
    for category in ("required", "optional"):
        section = schema.get("input", {}).get(category, {})
        if name in section:
            spec = section[name]
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    return None


def _convert(input_type: Any, value: Any) -> Any:
    if input_type == "INT":
        return int(value)
    if input_type == "FLOAT":
        return float(value)
    if input_type == "STRING":
        return str(value)
    if input_type == "BOOLEAN":
        return bool(value)
    return value


class _Validator:
    def __init__(
        self, prompt: Prompt, object_info: ObjectInfo, choices: Choices, custom: CustomChecks
    ) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.choices = choices
        self.custom = custom
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}

    def node(self, node_id: str, visiting: list[str]) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in visiting:
            cycle = [*visiting[visiting.index(node_id) :], node_id]
            path = " -> ".join(f"{n} ({self.prompt[n]['class_type']})" for n in cycle)
            for member in dict.fromkeys(cycle):
                self.validated[member] = (
                    False,
                    [_error("dependency_cycle", "Dependency cycle detected", path, node_id=member)],
                )
            return self.validated[node_id]

        node = self.prompt[node_id]
        class_type = node["class_type"]
        schema = self.object_info[class_type]
        inputs = node.get("inputs", {})
        errors: list[dict[str, Any]] = []
        valid = True
        names = list(schema.get("input", {}).get("required", {})) + list(
            schema.get("input", {}).get("optional", {})
        )
        for name in names:
            spec = _input_spec(schema, name)
            if spec is None:
                continue
            input_type, category, extra = spec
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            input_name=name,
                        )
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                ok = self._link(node_id, name, input_type, value, errors, visiting)
                valid = valid and ok
                continue
            check = self.custom.get((class_type, name))
            if check is not None:  # the node validates this input itself: no enum or range
                reason = check(value)
                if reason is not None:
                    errors.append(
                        _error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            f"{name} - {reason}",
                            input_name=name,
                        )
                    )
                continue
            self._literal(class_type, name, input_type, extra, value, errors)

        previous = self.validated.get(node_id, (True, []))
        result = (
            previous[0] and valid and not errors,
            previous[1] + [e for e in errors if e not in previous[1]],
        )
        self.validated[node_id] = result
        return result

    def _link(
        self,
        node_id: str,
        name: str,
        input_type: Any,
        value: list[Any],
        errors: list[dict[str, Any]],
        visiting: list[str],
    ) -> bool:
        if len(value) != 2:
            errors.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    input_name=name,
                    received_value=value,
                )
            )
            return True
        source_id, slot = str(value[0]), value[1]
        # As in ComfyUI, a link to a missing node or output slot raises here (KeyError,
        # IndexError); the node that linked to this one reports it as an inner exception.
        outputs = self.object_info[self.prompt[source_id]["class_type"]].get("output", [])
        received = outputs[slot]
        if not types_match(received, input_type):
            errors.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({input_type})",
                    input_name=name,
                    received_type=received,
                    linked_node=value,
                )
            )
            return True
        visiting.append(node_id)
        try:
            ok, _ = self.node(source_id, visiting)
        except (KeyError, IndexError, TypeError) as exc:
            self.validated[source_id] = (
                False,
                [
                    _error(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        str(exc),
                        input_name=name,
                        input_config=[input_type, {}],
                        exception_message=str(exc),
                        exception_type=type(exc).__name__,
                        linked_node=value,
                    )
                ],
            )
            return False
        finally:
            visiting.pop()
        return ok

    def _literal(
        self,
        class_type: str,
        name: str,
        input_type: Any,
        extra: Mapping[str, Any],
        value: Any,
        errors: list[dict[str, Any]],
    ) -> None:
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        try:
            value = _convert(input_type, value)
        except (TypeError, ValueError) as exc:
            errors.append(
                _error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {input_type} value",
                    f"{name}, {value}, {exc}",
                    input_name=name,
                    received_value=value,
                )
            )
            return
        if "min" in extra and value < extra["min"]:
            errors.append(
                _error(
                    "value_smaller_than_min",
                    f"Value {value} smaller than min of {extra['min']}",
                    name,
                    input_name=name,
                    received_value=value,
                )
            )
            return
        if "max" in extra and value > extra["max"]:
            errors.append(
                _error(
                    "value_bigger_than_max",
                    f"Value {value} bigger than max of {extra['max']}",
                    name,
                    input_name=name,
                    received_value=value,
                )
            )
            return
        if (class_type, name) in self.choices:
            options: list[Any] | None = list(self.choices[(class_type, name)])
        elif isinstance(input_type, list):
            options = input_type
        elif input_type == "COMBO":
            options = list(extra.get("options", []))
        else:
            options = None
        if options is not None and value not in options:
            listing = f"(list of length {len(options)})" if len(options) > 20 else str(options)
            errors.append(
                _error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: {value!r} not in {listing}",
                    input_name=name,
                    received_value=value,
                )
            )


def validate_prompt(
    prompt: Prompt,
    object_info: ObjectInfo,
    choices: Choices | None = None,
    custom: CustomChecks | None = None,
) -> ValidationResult:
    """Check `prompt` as ComfyUI's /prompt would, with `choices` replacing enums where given
    and `custom` standing in for nodes' own input validation."""
    if not isinstance(prompt, Mapping) or not prompt:
        return ValidationResult(
            False, _error("no_prompt", "No prompt provided", "No prompt provided"), []
        )
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping) or "class_type" not in node:
            return ValidationResult(
                False,
                _error(
                    "missing_node_type",
                    f"Node 'ID #{node_id}' has no class_type. The workflow may be corrupted "
                    "or a custom node is missing.",
                    f"Node ID '#{node_id}'",
                    node_id=node_id,
                    class_type=None,
                ),
                [],
            )
        class_type = node["class_type"]
        schema = object_info.get(class_type)
        if schema is None:
            title = (node.get("_meta") or {}).get("title", class_type)
            return ValidationResult(
                False,
                _error(
                    "missing_node_type",
                    f"Node '{title}' not found. The custom node may not be installed.",
                    f"Node ID '#{node_id}'",
                    node_id=node_id,
                    class_type=class_type,
                    node_title=title,
                ),
                [],
            )
        if schema.get("output_node") is True:
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [])

    validator = _Validator(prompt, object_info, choices or {}, custom or {})
    good: list[str] = []
    failures: list[dict[str, Any]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            ok, reasons = validator.node(output_id, [])
        except (KeyError, IndexError, TypeError) as exc:
            ok, reasons = (
                False,
                [
                    _error(
                        "exception_during_validation",
                        "Exception when validating node",
                        str(exc),
                        exception_type=type(exc).__name__,
                    )
                ],
            )
            validator.validated[output_id] = (ok, reasons)
        if ok:
            good.append(output_id)
            continue
        failures.extend(reasons)
        for node_id, (node_ok, node_reasons) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for e in failures)
        return ValidationResult(
            False,
            _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            [],
            node_errors,
        )
    return ValidationResult(True, None, good, node_errors)


def model_file_choices(
    files_by_folder: Mapping[str, list[str]],
) -> dict[tuple[str, str], list[str]]:
    """Choices for every model-file input whose schema enum lists a ComfyUI model folder (its
    values are whatever a given ComfyUI had on disk), from the files the project provides."""
    return {  # ComfyUI lists a model folder sorted
        key: sorted(files_by_folder.get(folder, []))
        for key, folder in COMFY_LISTED_MODEL_INPUTS.items()
    }
