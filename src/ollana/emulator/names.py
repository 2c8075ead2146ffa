"""Model names as Ollama parses them: [host/][namespace/]model[:tag], with its defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_HOST", "DEFAULT_NAMESPACE", "DEFAULT_TAG", "ModelName", "parse_name"]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_MISSING = "!MISSING!"  # what Ollama puts in an empty part, so that the name is invalid


@dataclass(frozen=True, slots=True)
class ModelName:
    """A fully qualified model name."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def key(self) -> str:
        """The name's identity: Ollama compares names case-insensitively."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".casefold()

    @property
    def display(self) -> str:
        """The shortest form, as /api/tags lists it (Name.DisplayShortest)."""
        if self.host.casefold() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.casefold() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def manifest_path(self) -> str:
        """Where Ollama keeps this name's manifest (used in its file-not-found errors)."""
        return (
            f"/root/.ollama/models/manifests/{self.host}/{self.namespace}/{self.model}/{self.tag}"
        )


def _cut_last(text: str, sep: str) -> tuple[str, str, bool]:
    i = text.rfind(sep)
    if i < 0:
        return text, "", False
    return text[:i] or _MISSING, text[i + 1 :] or _MISSING, True


def _alnum_or_underscore(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9")


def _valid_part(kind: str, part: str) -> bool:
    if not 1 <= len(part) <= (350 if kind == "host" else 80):
        return False
    if not _alnum_or_underscore(part[0]):
        return False
    for ch in part[1:]:
        if ch in "_-":
            continue
        if ch == ".":
            if kind == "namespace":
                return False
        elif ch == ":":
            if kind != "host":
                return False
        elif not _alnum_or_underscore(ch):
            return False
    return True


def parse_name(text: str) -> ModelName | None:
    """Parse a model name as model.ParseName does; None where Name.IsValid is false."""
    host = namespace = tag = ""
    rest = text
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag, _ = _cut_last(rest, ":")
    rest, model, found = _cut_last(rest, "/")
    if not found:
        model = rest
    else:
        rest, namespace, found = _cut_last(rest, "/")
        if not found:
            namespace = rest
        else:
            scheme, sep, after = rest.partition("://")
            host = after if sep else scheme
    name = ModelName(
        host or DEFAULT_HOST, namespace or DEFAULT_NAMESPACE, model, tag or DEFAULT_TAG
    )
    parts = (("host", name.host), ("namespace", name.namespace), ("model", name.model))
    if all(_valid_part(kind, part) for kind, part in (*parts, ("tag", name.tag))):
        return name
    return None
