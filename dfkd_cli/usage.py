"""What `dfkd <command> --help` and shell completion say, read without importing torch or Hydra:
the config groups and their options from the config files, and every key with its default and
its one-line description from the schemas' own source (config.py and each strategy's Config
dataclass: the comment on a field's line, else the comment lines right above it). The same text
makes docs/reference.md's key tables (`python -m dfkd_cli.usage docs/reference.md` rewrites
them; tests/test_usage.py holds them equal).

It also checks a command line for the mistakes Hydra would answer with a usage dump or a
traceback: `-m` after the overrides, a launcher or sweeper whose extra is not installed, and
the Ray plugin's own address path (hydra/launcher=ray with an address), which belongs to
hydra/launcher=ray_cluster.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import re
import sys
import tokenize
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dfkd_cli.errors import UserError

PACKAGE = Path(__file__).resolve().parent
CONFIGS = resources.files("dfkd_cli.configs")
# command -> its primary config and schema class (config.py)
SCHEMAS = {"train-teacher": ("train_teacher", "TrainTeacherConfig"),
           "distill": ("distill", "DistillConfig"), "probe": ("probe", "ProbeConfig")}
# the groups a key of the schema selects (its value comes from configs/<group>/)
GROUP_KEYS = ("dataset", "teacher", "student", "strategy", "optimizer", "alpha", "logger", "arm",
              "experiment", "hparams_search")
# launcher / sweeper options that a plugin provides: the module it needs, and the extra that
# installs it
PLUGINS = {
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "ray"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("hydra/launcher", "ray_cluster"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("hparams_search", "bounded_optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
}
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm", "ray", "ray_cluster")
RAY_ADDRESS_KEY = "hydra.launcher.ray.init.address"


@dataclass(frozen=True)
class Key:
    """One config key: its dotted name, default (as written in the schema) and description."""

    name: str
    default: str
    text: str


# --- the schemas' source ---------------------------------------------------------------------

@dataclass
class _Class:
    bases: list[str]
    fields: list[tuple[str, str, str, str]]  # name, annotation, default, comment


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Line number -> the text of the comment on that line, and the lines that hold nothing
    but a comment."""
    found, alone = {}, set()
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.start[0]
            found[line] = token.string.lstrip("#").strip()
            if lines[line - 1].lstrip().startswith("#"):
                alone.add(line)
    return found, alone


def _default(node: ast.expr | None, source: str) -> str:
    """A field's default as its schema writes it (field(default_factory=lambda: [50]) -> [50];
    MISSING -> "" (set by the command or a group option); II("batch_size") -> ${batch_size})."""
    if node is None:
        return ""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "field":
        for keyword in node.keywords:
            if keyword.arg == "default_factory":
                value = keyword.value
                body = value.body if isinstance(value, ast.Lambda) else value
                text = ast.get_source_segment(source, body) or ""
                return {"dict": "{}", "list": "[]"}.get(text, text)
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "II":
        return "${" + ast.literal_eval(node.args[0]) + "}"
    text = ast.get_source_segment(source, node) or ""
    if text == "MISSING":
        return ""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return text
    return {None: "null", True: "true", False: "false"}.get(value, value) \
        if isinstance(value, (bool, type(None))) else (value if isinstance(value, str)
                                                        else text)


def _classes(path: Path) -> dict[str, _Class]:
    """The dataclasses of a module: name -> bases, fields."""
    source = path.read_text()
    comments = _comments(source)
    classes = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = []
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                annotation = ast.get_source_segment(source, item.annotation) or ""
                if annotation.startswith("ClassVar"):
                    continue
                fields.append((item.target.id, annotation, _default(item.value, source),
                               _field_comment(comments, item.lineno)))
        if fields or any(getattr(d, "id", "") == "dataclass" for d in node.decorator_list):
            classes[node.name] = _Class([ast.unparse(b) for b in node.bases], fields)
    return classes


def _field_comment(comments: tuple[dict[int, str], set[int]], line: int) -> str:
    """The comment on the field's line, else the block of comment lines right above it."""
    text, alone = comments
    if line in text:
        return text[line]
    above = []
    while line - 1 in alone:
        line -= 1
        above.insert(0, text[line])
    return " ".join(above)


_PARSED: tuple[dict[str, _Class], dict[str, str]] | None = None


def _schemas() -> tuple[dict[str, _Class], dict[str, str]]:
    """Every dataclass of config.py and of the strategies' schemas, and strategy name -> its
    schema (the class whose `name` field defaults to it)."""
    global _PARSED
    if _PARSED is None:
        schemas = _classes(PACKAGE / "strategies" / "schemas.py")
        strategies = {default: name for name, cls in schemas.items()
                      for field, _, default, _ in cls.fields if field == "name" and default}
        _PARSED = {**_classes(PACKAGE / "config.py"), **schemas}, strategies
    return _PARSED


def _fields(name: str) -> dict[str, tuple[str, str, str]]:
    """A dataclass's fields with its bases' (a subclass's own definition wins)."""
    classes, _ = _schemas()
    cls = classes[name]
    merged: dict[str, tuple[str, str, str]] = {}
    for base in cls.bases:
        if base in classes:
            merged.update(_fields(base))
    for field_name, annotation, default, comment in cls.fields:
        inherited = merged.get(field_name, ("", "", ""))
        merged[field_name] = (annotation, default, comment or inherited[2])
    return merged


def keys(command: str, strategy: str | None = None) -> list[Key]:
    """Every key of `command`'s config: its own, then those of each nested schema (dataset.*,
    teacher.*, ...) and of the strategy `strategy` (default: the command's default one)."""
    classes, strategies = _schemas()
    config, schema = SCHEMAS[command]
    out = []
    nested = []
    for name, (annotation, default, text) in _fields(schema).items():
        if annotation in classes:
            nested.append((name, annotation))
        elif name == "strategy":
            nested.append((name, strategies[strategy or defaults(config)["strategy"]]))
        else:
            out.append(Key(name, default, text))
    for prefix, cls in nested:
        out += [Key(f"{prefix}.{name}", default, text)
                for name, (_, default, text) in _fields(cls).items()]
    return out


# --- the config files ------------------------------------------------------------------------

def defaults(config: str) -> dict[str, str]:
    """The group options a primary config picks (its defaults list): group -> option."""
    picked = {}
    for line in CONFIGS.joinpath(f"{config}.yaml").read_text().splitlines():
        match = re.match(r"\s*-\s+([\w/]+):\s*([\w.]+)", line)
        if match and "@" not in match.group(1):
            picked[match.group(1)] = match.group(2)
    return picked


def groups(config: str) -> dict[str, list[str]]:
    """Each group the command's config uses or may add (arm, experiment, ...) -> its options."""
    used = defaults(config)
    out = {}
    for group in GROUP_KEYS:
        folder = CONFIGS.joinpath(group)
        if group in used or (config == "distill" and folder.is_dir()):
            out[group] = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    out["hydra/launcher"] = list(LAUNCHERS)
    return out


# --- help -------------------------------------------------------------------------------------

def command_help(command: str, summary: str, args: list[str]) -> str:
    """`dfkd <command> --help`: usage, the groups and their options, every key."""
    config, _ = SCHEMAS[command]
    picked = defaults(config)
    strategy = next((a.split("=", 1)[1] for a in args if a.startswith("strategy=")), None)
    if strategy is not None and strategy not in _schemas()[1]:
        raise UserError(f"strategy={strategy} is not a strategy; valid: "
                        f"{', '.join(sorted(_schemas()[1]))}")
    lines = [f"usage: dfkd {command} [-m] [key=value | group=option]... [--cfg job]", "",
             f"dfkd {command}: {summary}.", "",
             "groups (group=option; the default first):"]
    for group, options in groups(config).items():
        default = picked.get(group, "basic" if group == "hydra/launcher" else None)
        shown = ([default] if default in options else []) + [o for o in options if o != default]
        lines.append(f"  {group + '=':<17}{', '.join(shown)}"
                     + ("" if default in options else " (none by default)"))
    shown_strategy = strategy or picked.get("strategy")
    lines += ["", f"keys (key=value; default; strategy.* of strategy={shown_strategy}: add "
                  "strategy=<name> for another's):" if shown_strategy else
              "keys (key=value; default):"]
    for key in keys(command, strategy):
        if key.name == "command":
            continue
        lines.append(f"  {key.name:<28}{key.default or '-':<14}{key.text}")
    lines += ["", "  -m, --multirun   sweep: one job per combination (key=a,b); comes first",
              "  --cfg job        print the composed config and stop",
              "  HYDRA_FULL_ERROR=1 dfkd ...   tracebacks of every error",
              "  hydra.<key>=...  Hydra's own settings (hydra.run.dir, hydra.sweep.dir, ...)",
              "Shell completion: dfkd completion bash (docs/reference.md)."]
    return "\n".join(lines)


def markdown_keys(command: str) -> str:
    """docs/reference.md's table of a command's keys (the default strategy's)."""
    rows = ["| key | default | what it does |", "|---|---|---|"]
    for key in keys(command):
        if key.name == "command":
            continue
        default = f"`{key.default}`" if key.default else "-"
        rows.append(f"| `{key.name}` | {default} | {key.text.replace('|', '&#124;')} |")
    return "\n".join(rows)


def rewrite_reference(path: Path) -> str:
    """The text of `path` with each `<!-- keys:<command> -->` ... `<!-- /keys -->` section
    replaced by markdown_keys(<command>)."""
    pattern = re.compile(r"(<!-- keys:([\w-]+) -->\n).*?(<!-- /keys -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + markdown_keys(m.group(2)) + "\n" + m.group(3),
                       path.read_text())


# --- completion -------------------------------------------------------------------------------

BASH = """# dfkd's bash completion: eval "$(dfkd completion bash)" (e.g. in ~/.bashrc)
_dfkd() {
    local IFS=$'\\n'
    COMPREPLY=($(dfkd --complete "${COMP_LINE:0:$COMP_POINT}" 2>/dev/null))
}
complete -o nospace -F _dfkd dfkd
"""


def complete(line: str, commands: list[str]) -> list[str]:
    """The completions of the last word of a command line: the commands after `dfkd`, then a
    command's groups and keys (`name=`), and a group's options after `group=`. Each completes
    bash's current word, which ends at the last `=` (bash splits words there)."""
    words = line.split()
    if line.endswith(" ") or not line:
        words.append("")
    if len(words) <= 2:
        return [c + " " for c in commands if c.startswith(words[-1])]
    command, word = words[1], words[-1]
    if command not in SCHEMAS:
        return []
    config, _ = SCHEMAS[command]
    options = groups(config)
    if "=" in word:
        name, _, value = word.partition("=")
        return [o + " " for o in options.get(name.lstrip("+"), []) if o.startswith(value)]
    names = sorted({*(f"{g}=" for g in options),
                    *(f"{k.name}=" for k in keys(command) if k.name != "command")})
    flags = ["-m", "--cfg", "--help"] if word.startswith("-") else []
    return [n for n in names if n.startswith(word)] + [f + " " for f in flags
                                                       if f.startswith(word)]


# --- checks of a command line ------------------------------------------------------------------

def is_override(arg: str) -> bool:
    """key=value, group=option, +key=value or ~key: not a flag, nor a flag's value (--cfg job)."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def check_arguments(command: str, args: list[str]) -> None:
    """The mistakes Hydra would answer with a usage dump or a traceback, as one line each."""
    overrides = [a for a in args if is_override(a)]
    if any(flag in args for flag in ("-sc", "--shell-completion")):
        raise UserError("Hydra's shell completion does not work through `dfkd <command>`; use "
                        "dfkd's: eval \"$(dfkd completion bash)\"")
    for flag in ("-m", "--multirun"):
        if flag in args and any(is_override(a) for a in args[:args.index(flag)]):
            moved = " ".join([flag] + [a for a in args if a != flag])
            raise UserError(f"{flag} must come first, right after the command: "
                            f"dfkd {command} {moved}")
    chosen = {}
    for override in overrides:
        key, _, value = override.partition("=")
        chosen[key.lstrip("+~")] = value
    for (group, option), (module, extra) in PLUGINS.items():
        if chosen.get(group) == option and importlib.util.find_spec(module) is None:
            raise UserError(f"{group}={option} needs the [{extra}] extra: pip install "
                            f"\"dfkd-cli[{extra}]\" (in a clone: make install, or pip install "
                            f"-e \".[{extra}]\")")
    address = chosen.get(RAY_ADDRESS_KEY) or os.environ.get("RAY_ADDRESS")
    if chosen.get("hydra/launcher") == "ray" and address:
        raise UserError(f"hydra/launcher=ray starts a Ray instance of its own; for the running "
                        f"cluster at {address} use hydra/launcher=ray_cluster (with the same "
                        f"{RAY_ADDRESS_KEY}= or RAY_ADDRESS)")


def main(argv: list[str] | None = None) -> int:
    """`python -m dfkd_cli.usage FILE.md...`: rewrite the key tables of those files."""
    for name in (sys.argv[1:] if argv is None else argv):
        path = Path(name)
        path.write_text(rewrite_reference(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
