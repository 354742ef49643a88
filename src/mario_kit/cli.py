"""The `mario-kit` command line: parsing and printing only; every command calls the library."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from mario_kit import UserError, __version__

if TYPE_CHECKING:
    from mario_kit.world_model.training.scores import Evaluation, RolloutScores

EPISODE_DIR = typer.Argument(..., help="Episode folder.")  # the one positional most dataset commands take


class ImportFormat(str, Enum):
    """Layouts `dataset import` reads."""

    seed = "seed"
    replay = "replay"


class ExportFormat(str, Enum):
    """Layouts `dataset export` writes."""

    seed = "seed"
    minari = "minari"
    replay = "replay"


app = typer.Typer(
    help="Super Mario Bros datasets (human, agent, random play), balancing, and a diffusion world model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain: "[simple; an agent's own set]" and "[seed, i]" stay as written
)
dataset_app = typer.Typer(help="Inspect, check and transform episode folders.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
out = Console(soft_wrap=True, highlight=False)  # lines as long as they are; no colours inside paths and numbers
err = Console(stderr=True, soft_wrap=True, highlight=False)
SEED: dict[str, Any] = dict(min=0, max=2**63 - 1)  # numpy's and torch's generators take seeds in this range


def _version(value: bool) -> None:
    if value:
        print(f"mario-kit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


@app.command()
def collect(
    out_dir: Path = typer.Option(
        ..., "--out", help="Episode folder (created; appended to if it holds compatible episodes)."
    ),
    random: bool = typer.Option(False, "--random", help="Random policy: uniform, or sticky with --sticky P."),
    sticky: Optional[float] = typer.Option(
        None, help="Keep the previous action with probability P (random collector)."
    ),
    human: bool = typer.Option(False, "--human", help="Play with the keyboard in a pygame window."),
    frontier: bool = typer.Option(
        False, "--frontier", help="Return to the edge of what was seen, explore from there (--sticky P: how)."
    ),
    agent: Optional[str] = typer.Option(None, "--agent", help="Agent collector: ppo (needs --model)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Agent file (`mario-kit agent train`)."),
    random_factor: float = typer.Option(0.0, help="Agent: probability of replacing its action by a random one."),
    random_factor_range: Optional[tuple[float, float]] = typer.Option(
        None, help="Agent: draw the factor per episode from [LO, HI]."
    ),
    deterministic: bool = typer.Option(True, "--deterministic/--stochastic", help="Agent: greedy or sampled actions."),
    balance: Optional[str] = typer.Option(
        None, "--balance", help="Balancing strategy wrapping the policy: repeat | hash."
    ),
    balance_set: list[str] = typer.Option(
        [], "--balance-set", help="Strategy parameter key=value (repeatable), e.g. p=0.3."
    ),
    episodes: Optional[int] = typer.Option(None, help="Number of episodes to record."),
    steps: Optional[int] = typer.Option(None, help="Number of recorded steps in all (instead of --episodes)."),
    level: str = typer.Option("1-1", help="W-S, a comma list, or 'random' (one drawn per episode)."),
    action_set: Optional[str] = typer.Option(None, help="right | simple | complex [simple; an agent's own set]."),
    frame_skip: int = typer.Option(4, help="Emulator frames per recorded step (the action is held; rewards summed)."),
    max_steps: Optional[int] = typer.Option(
        None, help="Steps per episode up to the game's end before truncation [random: 1000, human: 100000]."
    ),
    ending_steps: Optional[int] = typer.Option(
        None,
        help="Steps recorded past a death or the flag while the game plays its ending, stopping when it "
        "leaves the stage (0: stop at the first dying frame, as gym-super-mario-bros does) [32].",
    ),
    seed: Optional[int] = typer.Option(None, **SEED, help="Seed; episode i uses default_rng([seed, i])."),
    workers: int = typer.Option(1, help="Worker processes."),
    ray: bool = typer.Option(
        False, "--ray", help="Run the episodes as Ray tasks (a local Ray, or the cluster at --ray-address)."
    ),
    ray_address: Optional[str] = typer.Option(
        None, help="Ray cluster: auto or HOST:PORT [RAY_ADDRESS, else a local Ray]."
    ),
    ray_write: str = typer.Option(
        "driver",
        help="Ray: driver (episodes come back to this machine) or shared (tasks write into --out, "
        "which every node must mount).",
    ),
    player: str = typer.Option("", help="Player name stored in every episode."),
    scale: int = typer.Option(3, help="Window scale (human)."),
    keymap: Optional[Path] = typer.Option(None, help='Key mapping JSON file (human), e.g. {"A": ["x", "space"]}.'),
    fps: float = typer.Option(60.0, help="Display and emulation rate (human); NES speed is 60."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Record episodes with a collector: --random, --frontier, --human or --agent ppo."""
    from mario_kit.collectors import COLLECTORS

    chosen = _chosen_collector(random, sticky, frontier, human, agent)
    result = COLLECTORS[chosen](out_dir, progress=not quiet, **_collector_options(chosen, locals()))
    _print_collection(result, out_dir)
    if result.interrupted:
        raise typer.Exit(130)


COMMON_COLLECT = (
    "level",
    "action_set",
    "frame_skip",
    "max_steps",
    "ending_steps",
    "episodes",
    "steps",
    "seed",
    "workers",
    "player",
)
OWN_COLLECT = {
    "random": ("sticky",),
    "frontier": ("sticky",),
    "human": ("scale", "keymap", "fps"),
    "ppo": ("model", "random_factor", "random_factor_range", "deterministic"),
}


def _chosen_collector(random: bool, sticky: float | None, frontier: bool, human: bool, agent: str | None) -> str:
    """The one collector `collect`'s flags name (--sticky alone means --random)."""
    if agent is not None and agent != "ppo":
        raise UserError(f"unknown agent {agent!r}; agents: ppo")
    picks = (("frontier", frontier), ("random", (random or sticky is not None) and not frontier), ("human", human))
    chosen = [name for name, on in (*picks, ("ppo", agent)) if on]
    if len(chosen) != 1:
        raise UserError(
            "choose one collector: --random (optionally --sticky P), --frontier, --human, or --agent ppo --model M"
        )
    return chosen[0]


def _collector_options(name: str, p: dict[str, Any]) -> dict[str, Any]:
    """The keywords of collector `name` from `collect`'s parameters `p`: the shared ones given (the
    others keep the collector's default) and the collector's own."""
    common = {k: p[k] for k in COMMON_COLLECT} | {"balance": p["balance"], "ray": p["ray"] or None}
    common |= {"ray_address": p["ray_address"], "ray_write": p["ray_write"] if p["ray"] else None}
    options = {k: v for k, v in common.items() if v is not None} | {"balance_kwargs": _key_values(p["balance_set"])}
    if name == "ppo" and p["random_factor_range"] is not None and p["random_factor"] != 0.0:
        raise UserError("give --random-factor P or --random-factor-range LO HI, not both")
    return options | {k: p[k] for k in OWN_COLLECT[name]}


def _print_collection(result: Any, out_dir: Path) -> None:
    """What `collect` says at the end: what was there already, what was recorded, on which nodes."""
    if result.summary:
        _print_session(result.summary)
    note = " (interrupted: the episode in progress was discarded)" if result.interrupted else ""
    if result.already:
        out.print(
            f"{out_dir} already held {result.already} episode{'' if result.already == 1 else 's'} of this command "
            f"(seed {result.seed}): kept, not recorded again; to add more, raise --episodes/--steps or use another --seed"
        )
    n = len(result.paths)
    out.print(
        f"collected {n} episode{'' if n == 1 else 's'}, {result.steps:,} steps into {out_dir} (seed {result.seed}){note}"
    )
    if result.nodes:
        out.print(
            f"on {len(result.nodes)} Ray node{'' if len(result.nodes) == 1 else 's'}: "
            + ", ".join(f"{k[:8]} {v}" for k, v in sorted(result.nodes.items(), key=lambda kv: -kv[1]))
        )


def _config(cls: Any, given: dict[str, Any], **renamed: Any) -> Any:
    """A config dataclass from a command's parameters: those named as its fields (one name for one
    setting in the command and the library), and `renamed` for the others."""
    names = {f.name for f in dataclasses.fields(cls)} - renamed.keys()
    return cls(**{k: v for k, v in given.items() if k in names}, **renamed)


def _key_values(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _print_session(summary: dict) -> None:

    out.print(f"session: {summary['episodes']} episodes, {summary['steps']:,} steps -> {summary['folder']}")
    t = Table()  # the facts above, not in a title that wraps at the table's width
    t.add_column("action")
    t.add_column("steps", justify="right")
    for name, n in summary["actions"].items():
        t.add_row(name, f"{n:,}")
    out.print(t)


@app.command()
def serve(
    out_dir: Path = typer.Option(..., "--out", help="Episode folder the players record into (created; appended to)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; use --invites then)."),
    port: int = typer.Option(8000, help="TCP port."),
    level: str = typer.Option("1-1", help="W-S, a comma list (N moves on), or 'random'."),
    action_set: str = typer.Option("simple", help="right | simple | complex."),
    frame_skip: int = typer.Option(4, help="Emulator frames per recorded step."),
    invites: Optional[Path] = typer.Option(
        None, help="Invites file (`mario-kit invite add`): a token is required to play."
    ),
    max_players: int = typer.Option(4, help="Players at once."),
    keep_on_disconnect: bool = typer.Option(
        False, "--keep-on-disconnect", help="Keep a dropped player's episode in progress as end=cut (default: discard)."
    ),
    allow_origin: list[str] = typer.Option(
        [],
        "--allow-origin",
        help="Another page origin allowed to connect (repeatable), "
        "e.g. https://mario.example.org behind a reverse proxy; pages of other sites are refused.",
    ),
) -> None:
    """Serve a page where people play in their browser; their episodes are recorded into --out."""
    from mario_kit.serve.app import ServeConfig, serve as run_server

    run_server(
        ServeConfig(
            out=out_dir,
            host=host,
            port=port,
            level=level,
            action_set=action_set,
            frame_skip=frame_skip,
            invites=invites,
            max_players=max_players,
            keep_on_disconnect=keep_on_disconnect,
            allow_origins=tuple(allow_origin),
        )
    )


invite_app = typer.Typer(
    help="Invite tokens for `mario-kit serve --invites FILE` (stored hashed).", no_args_is_help=True
)
app.add_typer(invite_app, name="invite")


@invite_app.command("add")
def invite_add(
    invites: Path = typer.Option(..., "--invites", help="Invites file (created)."),
    player: str = typer.Option(..., "--player", help="The player's name, recorded in their episodes."),
    max_connections: int = typer.Option(1, help="Connections this token may hold at once."),
) -> None:
    """A new token for a player: printed once, only its hash is kept."""
    from mario_kit.serve.invites import add

    token = add(invites, player, max_connections)
    out.print(f"token for {player}: {token}")
    out.print(f"their link: http://HOST:PORT/?token={token}")


@invite_app.command("revoke")
def invite_revoke(
    invites: Path = typer.Option(..., "--invites", help="Invites file."),
    player: str = typer.Option(..., "--player", help="Revoke every token of this player."),
) -> None:
    """Revoke a player's tokens (their open connections stop within seconds)."""
    from mario_kit.serve.invites import revoke

    out.print(f"revoked {revoke(invites, player)} token(s) of {player}")


@invite_app.command("list")
def invite_list(invites: Path = typer.Option(..., "--invites", help="Invites file.")) -> None:
    """Players, token ids (the hash's first 8 characters) and whether revoked."""
    from mario_kit.serve.invites import listing

    for r in listing(invites):
        out.print(f"{r['id']}  {r['player']}  {'revoked' if r['revoked'] else 'active'}  max {r['max_connections']}")


@app.command()
def report(
    directories: list[Path] = typer.Argument(..., help="One or more episode folders (compared side by side)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for report.html, the PNGs and stats.json."),
    frames: bool = typer.Option(True, "--frames/--no-frames", help="Frame-based figures (duplicates, sample frames)."),
    sample: Optional[int] = typer.Option(None, min=1, help="Frame figures from this many episodes per dataset."),
) -> None:
    """Dataset statistics as tables, plots and one self-contained HTML page."""
    from mario_kit.reports.report import make_report

    r = make_report(list(directories), out_dir, frames, sample)
    for name, s in r["stats"].items():
        out.print(
            f"{name}: {s['episodes']} episodes, {s['steps']:,} steps, entropy {s['action_entropy_bits']} bits, "
            f"{s['scenario_keys']} scenario keys"
        )
        for bad in s["skipped_files"]:  # the page lists them too
            err.print(f"[yellow]not indexed: {bad['file']}: {bad['reason']}")
    out.print(f"written: {r['html']}")


@app.command()
def balance(
    directory: Path = EPISODE_DIR,
    strategy: str = typer.Option("class", "--strategy", help="class | hash | repeat | place."),
    out_file: Path = typer.Option(..., "--out", help="Weights file to write (.npz), for `dataset build --weights`."),
    params: list[str] = typer.Option([], "--set", help="Strategy parameter key=value, e.g. cap=0.4, target=NOOP."),
    force: bool = typer.Option(False, "--force", help="Overwrite the weights file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Post-hoc balancing: per-step sampling weights for an existing dataset (no frames copied)."""

    from mario_kit.balancing.offline import balance_dataset

    try:
        r = balance_dataset(directory, out_file, strategy, force, **_key_values(params))
    except TypeError as e:
        raise UserError(f"bad parameter for --strategy {strategy}: {e}") from None
    if as_json:
        print(json.dumps(r, indent=2))
        return
    t = Table(title=f"{strategy}: action shares before and after weighting")
    for c in ("action", "before", "after"):
        t.add_column(c, justify="left" if c == "action" else "right")
    for a in r["before"]:
        t.add_row(a, f"{100 * r['before'][a]:.1f}%", f"{100 * r['after'][a]:.1f}%")
    out.print(t)
    if "places" in r:
        _print_places(r["places"])
    out.print(
        f"entropy {r['entropy_bits_before']} -> {r['entropy_bits_after']} bits; effective samples "
        f"{r['effective_samples']:,.0f} of {r['steps']:,}; weights: {out_file}"
    )


def _print_places(places: list[dict]) -> None:
    """The place strategy's shares: a row a place where there are at most 40, then their range after."""
    if not places:
        return
    if len(places) <= 40:
        t = Table(title="place: step shares before and after weighting")
        for c in ("stage", "x", "steps", "before", "after"):
            t.add_column(c, justify="left" if c == "stage" else "right")
        for p in places:
            row = (
                p["level"],
                str(p["x_from"]),
                f"{p['steps']:,}",
                f"{100 * p['before']:.1f}%",
                f"{100 * p['after']:.1f}%",
            )
            t.add_row(*row)
        out.print(t)
    a = [p["after"] for p in places]
    out.print(f"{len(places)} places; after weighting each holds {100 * min(a):.1f}-{100 * max(a):.1f}% of the samples")


agent_app = typer.Typer(help="Train and evaluate PPO agents (stable-baselines3).", no_args_is_help=True)
app.add_typer(agent_app, name="agent")


@agent_app.command("train")
def agent_train(
    out_dir: Path = typer.Option(..., "--out", help="Run folder (agent.zip, checkpoints/, logs/, eval.csv)."),
    level: str = typer.Option("1-1", help="Level W-S."),
    timesteps: Optional[int] = typer.Option(
        None, min=1, help="Agent steps in all (a resumed run counts on) [1,000,000]."
    ),
    workers: Optional[int] = typer.Option(None, min=1, help="Parallel envs (subprocesses) [8]."),
    action_set: str = typer.Option("simple", help="right | simple | complex."),
    seed: int = typer.Option(0, **SEED, help="Seed."),
    checkpoint_every: Optional[int] = typer.Option(None, min=1, help="Agent steps between checkpoints [50,000]."),
    eval_every: Optional[int] = typer.Option(None, min=1, help="Agent steps between evaluations [50,000]."),
    eval_episodes: Optional[int] = typer.Option(None, min=1, help="Episodes per evaluation [5]."),
    overrides: list[str] = typer.Option([], "--set", help="Any AgentConfig field: key=value."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    dream: bool = typer.Option(False, "--dream", help="Learn inside the world model's dream, not the game."),
    run: Optional[Path] = typer.Option(None, "--run", help="With --dream: world-model run [the shipped model]."),
    spawns: Optional[Path] = typer.Option(None, "--spawn", help="With --dream: spawns file [the shipped one]."),
    device: str = typer.Option("cpu", help="With --dream: the world model's device (cpu, cuda, auto)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a PPO agent on one level (defaults: AgentConfig in mario_kit.agents.ppo); with --dream,
    inside the world model (--workers dreams in one batch), scored in the real game."""
    from mario_kit.agents.ppo import AgentConfig, train_agent
    from mario_kit.hardware import resolve_device
    from mario_kit.world_model.config import apply_override

    given: dict[str, Any] = {
        "timesteps": timesteps,
        "workers": workers,
        "checkpoint_every": checkpoint_every,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
    }
    cfg = AgentConfig(
        level=level, action_set=action_set, seed=seed, **{k: v for k, v in given.items() if v is not None}
    )
    for item in overrides:
        apply_override(cfg, item)
    if dream:
        from mario_kit.world_model.programs.dream_agent import train_in_dream

        r = train_in_dream(cfg, out_dir, run, spawns, resolve_device(device), resume=resume, progress=not quiet)
    elif run is not None or spawns is not None:
        raise UserError("--run and --spawn go with --dream")
    else:
        r = train_agent(cfg, out_dir, resume=resume, progress=not quiet)
    out.print(f"agent after {r['timesteps']:,} steps: {r['agent']}")
    if r["interrupted"]:
        out.print("interrupted: agent and checkpoint saved; continue with --resume")
        raise typer.Exit(130)


@agent_app.command("eval")
def agent_eval(
    model_path: Path = typer.Argument(..., help="Agent file."),
    episodes: int = typer.Option(10, min=1, help="Episodes."),
    stochastic: bool = typer.Option(False, "--stochastic", help="Sample actions instead of the greedy ones."),
    seed: int = typer.Option(0, **SEED, help="Seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Mean return, mean and best max x_pos, completion rate."""
    from mario_kit.agents.ppo import evaluate_agent, load_agent

    model, rec = load_agent(model_path)
    r = evaluate_agent(model, rec, episodes, deterministic=not stochastic, seed=seed, progress=not as_json)
    print(json.dumps(r, indent=2) if as_json else ", ".join(f"{k} {v}" for k, v in r.items()))


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo"), "--out", help="Folder for every artefact of the demo."),
    force: bool = typer.Option(False, "--force", help="Replace a previous demo in that folder."),
    seed: int = typer.Option(0, **SEED, help="Seed of the whole demo."),
) -> None:
    """The main job on small defaults: collect, inspect, build, train a tiny model, dream a GIF."""
    from mario_kit.demo import DemoConfig, run

    run(DemoConfig(out=out_dir, force=force, seed=seed), echo=out.print)


@dataset_app.command("info")
def dataset_info(
    directory: Path = EPISODE_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Episodes, steps, frames, bytes on disk, sources, action sets, levels and action counts."""
    from mario_kit.datasets.dataset import Dataset
    from mario_kit.reports.stats import summary

    s = summary(Dataset(directory).require_episodes(valid=False))
    if as_json:
        print(json.dumps(s, indent=2))
        return
    from mario_kit.reports.tables import summary_tables

    for table in summary_tables(s):
        out.print(table)
    for name in s["partial_files"]:
        err.print(f"[yellow]incomplete file (killed or running writer), ignored: {name}")
    for bad in s["skipped_files"]:
        err.print(f"[yellow]not indexed: {bad['file']}: {bad['reason']}")


@dataset_app.command("validate")
def dataset_validate(
    directory: Path = EPISODE_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    frames: bool = typer.Option(True, "--frames/--no-frames", help="Decode every frame (slower, thorough)."),
) -> None:
    """Check every file against the format; exit 1 when any is bad."""
    from mario_kit.datasets.validate import validate_dir

    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder")
    rep = validate_dir(directory, frames=frames, progress=not as_json)
    if not (rep.good or rep.bad or rep.partial):  # nothing to validate is not a pass
        raise UserError(f"{directory} holds no episode files (*.h5): nothing to validate")
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        for p, reason in rep.bad:
            out.print(f"[red]BAD[/red] {p.name}: {reason}")
        for p in rep.partial:
            out.print(
                f"[yellow]INCOMPLETE[/yellow] {p.name}: temporary file of a killed or running writer (ignored by tools)"
            )
        for p in rep.ignored:
            out.print(f"IGNORED {p.name}: not an episode file (every tool skips it)")
        out.print(
            f"{len(rep.good)} good, {len(rep.bad)} bad, {len(rep.partial)} incomplete, {len(rep.ignored)} ignored"
        )
    if not rep.ok:
        raise typer.Exit(1)


@dataset_app.command("split")
def dataset_split(
    directory: Path = EPISODE_DIR,
    percentage: float = typer.Option(15.0, help="Share of episodes in the test split, in percent."),
    seed: int = typer.Option(0, **SEED, help="Seed of the episode order."),
    stratify: str = typer.Option("", help="Comma list of source, level: keep the share within each group."),
    reset: bool = typer.Option(False, "--reset", help="Forget existing assignments and split anew."),
    txt: Optional[Path] = typer.Option(None, help="Also write the seed project's test_split.txt here."),
) -> None:
    """Split by episode into train/test (kept in the folder; new episodes are added to it later)."""
    from mario_kit.datasets.split import split_dataset

    strata = tuple(x for x in stratify.split(",") if x)
    a = split_dataset(directory, percentage, seed, strata, reset, txt)
    n_test = sum(v == "test" for v in a.values())
    out.print(f"{len(a) - n_test} train, {n_test} test episodes ({directory}/mario-kit.split.json)")
    if n_test == 0 and percentage > 0:
        err.print(
            "warning: no test episode (a test split needs two episodes or more); training will report no test loss"
        )


@dataset_app.command("merge")
def dataset_merge(
    sources: list[Path] = typer.Argument(..., help="Episode folders to merge."),
    out_dir: Path = typer.Option(..., "--out", help="Folder of the merged dataset."),
    action_set: Optional[str] = typer.Option(None, help="Map every episode's actions into this action set."),
) -> None:
    """Merge datasets (hard links: no copy). Mixed action sets need --action-set."""
    from mario_kit.datasets.ops import merge

    c = merge(list(sources), out_dir, action_set)
    out.print(
        f"merged into {out_dir}: {c['link']} linked, {c['copy']} copied, {c['mapped']} rewritten with mapped actions, {c['present']} already there"
    )


@dataset_app.command("filter")
def dataset_filter(
    directory: Path = EPISODE_DIR,
    out_dir: Path = typer.Option(..., "--out", help="Folder of the view (hard links)."),
    source: Optional[str] = typer.Option(None, help="Comma list of sources."),
    level: Optional[str] = typer.Option(None, help="Comma list of levels."),
    player: Optional[str] = typer.Option(None, help="Player name."),
    end: Optional[str] = typer.Option(None, help="Comma list of end reasons (terminated, flag, truncated, cut)."),
    min_length: Optional[int] = typer.Option(None, help="Minimum steps."),
    max_length: Optional[int] = typer.Option(None, help="Maximum steps."),
    since: Optional[str] = typer.Option(None, help="Created at or after (ISO date/time)."),
    until: Optional[str] = typer.Option(None, help="Created at or before (ISO date/time)."),
    split: Optional[str] = typer.Option(None, help="Only episodes of this split (train/test)."),
    sample: Optional[int] = typer.Option(None, min=1, help="Then this many of them, drawn with --seed (all if fewer)."),
    seed: int = typer.Option(0, **SEED, help="Seed of the --sample draw."),
) -> None:
    """Select episodes into a view: a folder of hard links that every command reads as a dataset."""
    from mario_kit.datasets.ops import Filter, filter_dataset

    flt = Filter(source, level, player, end, min_length, max_length, since, until, split, sample, seed)
    c = filter_dataset(directory, out_dir, flt)
    out.print(f"{c['link'] + c['copy'] + c['present']} episodes in the view {out_dir}")


@dataset_app.command("import")
def dataset_import(
    directory: Path = typer.Argument(
        ..., help="Folder of files in the foreign layout (replay: the export folder or its replay.json.xz)."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Episode folder to import into."),
    fmt: ImportFormat = typer.Option(
        "seed",
        "--format",
        help="Layout: seed (Super Mario DIAMOND's HDF5 files), or replay "
        "(a mario-kit dataset without frames: `dataset export --format replay`).",
    ),
    action_set: Optional[str] = typer.Option(None, help="Seed layout: action set of the imported episodes [simple]."),
    source: Optional[str] = typer.Option(
        None, help="Seed layout: source recorded in the imported episodes (e.g. human, agent) [seed]."
    ),
    level: Optional[str] = typer.Option(None, help="Seed layout: level the files were recorded on (W-S) [1-1]."),
    frame_skip: Optional[int] = typer.Option(None, help="Seed layout: frame skip the files were recorded with [4]."),
    player: Optional[str] = typer.Option(None, help="Seed layout: player name recorded in every episode."),
    workers: int = typer.Option(1, min=1, help="Replay: processes replaying episodes side by side."),
) -> None:
    """Import episodes from another layout: every file is checked first, then all land or none."""
    seed_options = {
        "--action-set": action_set,
        "--source": source,
        "--level": level,
        "--frame-skip": frame_skip,
        "--player": player,
    }
    if fmt is ImportFormat.replay:
        return _import_replay(directory, out_dir, workers, seed_options)
    from mario_kit.datasets.interop.seed import import_seed

    action_set = action_set or "simple"
    s = import_seed(
        directory,
        out_dir,
        action_set,
        source or "seed",
        level or "1-1",
        4 if frame_skip is None else frame_skip,
        player or "",
        progress=True,
    )
    _print_seed_import(s, action_set, out_dir)


@dataset_app.command("export")
def dataset_export(
    directory: Path = EPISODE_DIR,
    out_dir: Path = typer.Option(..., "--out", help="Folder for the exported files."),
    fmt: ExportFormat = typer.Option(
        "seed", "--format", help="Layout: seed, or minari (a Minari dataset under --out)."
    ),
    dataset_id: Optional[str] = typer.Option(
        None, "--dataset-id", help="Minari: NAMESPACE/NAME-vN, e.g. mario/human-v0."
    ),
    pack: int = typer.Option(
        1000,
        min=0,
        help="Frames per file, episodes joined as the seed's generators write them "
        "(its loader reads 1000 a file); 0: one file per episode.",
    ),
    labels: Optional[str] = typer.Option(
        None, help="Label layout: onehot7, wasd4 or wad3 [onehot7; with --pack 0, an imported episode's own labels]."
    ),
    remainder: str = typer.Option(
        "drop",
        help="The last file's frames when they are fewer than --pack: drop (every "
        "file one the seed reads) or keep (a short last file the seed's loader fails on).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Export episodes to another layout."""
    from mario_kit.datasets.interop.seed import export_seed

    if fmt is ExportFormat.minari:
        from mario_kit.datasets.interop.minari_export import export_minari

        r = export_minari(directory, out_dir, dataset_id or "", force)
        out.print(
            f"exported {r['episodes']} episodes ({r['frames']:,} frames) as the Minari dataset {dataset_id} in "
            f"{r['path']}: {r['bytes'] / 1e6:,.1f} MB (frames are stored raw, about 184 KB each); open it with "
            f"MINARI_DATASETS_PATH={out_dir} and minari.load_dataset({dataset_id!r})"
        )
        return
    if fmt is ExportFormat.replay:
        from mario_kit.datasets.interop.replay import export_replay

        r = export_replay(directory, out_dir, force, progress=True)
        out.print(
            f"exported {r['episodes']} episodes ({r['steps']:,} steps) without their frames to {r['path']}: "
            f"{r['bytes'] / 1e3:,.1f} KB; `mario-kit dataset import {out_dir} --format replay --out DIR` "
            f"rebuilds them by replay"
        )
        return
    s = export_seed(directory, out_dir, force, pack, labels, remainder)
    out.print(
        f"exported {s.episodes} episodes ({s.frames:,} frames) into {len(s.files)} files in {out_dir}"
        + (f"; {s.dropped_frames} frames of a partial last file dropped" if s.dropped_frames else "")
    )
    for note in s.unread_by:
        err.print(f"note: {note}")
    if s.remapped:
        out.print(
            "actions the label layout cannot express, written as the nearest label: "
            + ", ".join(f"{k} ({n:,})" for k, n in s.remapped.most_common())
        )


@dataset_app.command("build")
def dataset_build(
    directory: Path = EPISODE_DIR,
    store: Path = typer.Option(..., "--out", help="Training store to create or extend (STORE.zarr)."),
    full_res: bool = typer.Option(False, "--full-res", help="Also keep full-resolution frames (for the upsampler)."),
    weights: Optional[Path] = typer.Option(None, help="Balancing weights (.npz written by `mario-kit balance`)."),
    force: bool = typer.Option(False, "--force", help="Rebuild from scratch."),
    verify: bool = typer.Option(False, "--verify", help="Checksum every episode, not only changed-looking ones."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    compression_level: Optional[int] = typer.Option(
        None,
        min=1,
        max=22,
        help="zstd level of a new store's chunks [3]; higher: smaller, slower to build, as fast to read.",
    ),
) -> None:
    """Build (or extend, or resume) the zarr training store."""
    from mario_kit.datasets.store import build_store, store_info

    r = build_store(
        directory,
        store,
        full_res,
        weights,
        force,
        verify,
        progress=not (as_json or quiet),
        compression_level=compression_level,
    )
    if r.unweighted:
        err.print(
            f"warning: {weights} has no weights for {len(r.unweighted)} episodes (e.g. {r.unweighted[0]}); they got weight 1"
        )
    info = store_info(store) | {"added": r.added, "kept": r.kept}
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        out.print(
            f"{store}: {info['episodes']} episodes ({r.added} added), {info['frames']:,} frames, "
            f"{info['train_episodes']} train / {info['test_episodes']} test, {info['bytes'] / 1e6:.1f} MB"
        )


@dataset_app.command("spawn")
def dataset_spawn(
    directory: Path = EPISODE_DIR,
    out_file: Path = typer.Option(..., "--out", help="Spawns file to write (.h5), or a folder with --format seed."),
    fmt: str = typer.Option(
        "h5", "--format", help="h5 (for `mario-kit play`) or seed (DIAMOND's folders of .npy files)."
    ),
    n: int = typer.Option(16, min=1, help="Number of spawns (with --per-level, on each stage)."),
    per_level: bool = typer.Option(False, "--per-level", help="Draw --n spawns on each stage, not --n in all."),
    context: int = typer.Option(4, min=1, max=64, help="Past frames per spawn: at least the model's n_context."),
    seed: int = typer.Option(0, **SEED, help="Seed of the draw."),
    level: Optional[str] = typer.Option(None, help="Comma list of levels."),
    x_min: Optional[int] = typer.Option(None, help="Minimum x_pos."),
    x_max: Optional[int] = typer.Option(None, help="Maximum x_pos."),
    split: Optional[str] = typer.Option(None, help="Only episodes of this split (train/test)."),
    labels: Optional[str] = typer.Option(
        None, help="With --format seed: the actions' label layout, onehot7, wasd4 or wad3 [wad3, as the seed's spawns]."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the spawns file."),
) -> None:
    """Starting contexts for `mario-kit play` (--context frames and actions, and where they come from)."""
    from mario_kit.datasets.ops import make_spawns

    p = make_spawns(
        directory,
        out_file,
        n=n,
        n_context=context,
        seed=seed,
        level=level,
        x_min=x_min,
        x_max=x_max,
        split=split,
        force=force,
        fmt=fmt,
        labels=labels,
        per_level=per_level,
    )
    out.print(f"wrote spawns to {p}")


def _import_replay(directory: Path, out_dir: Path, workers: int, seed_options: dict[str, Any]) -> None:
    from mario_kit.datasets.interop.replay import import_replay

    given = [k for k, v in seed_options.items() if v is not None]
    if given:
        raise UserError(f"{given[0]} is for --format seed; a replay file records each episode's own")
    r = import_replay(directory, out_dir, workers=workers, progress=True)
    if not r.episodes:
        out.print(f"nothing to replay: the {len(r.skipped)} episodes of the file are already in {out_dir}")
        return
    out.print(
        f"replayed {r.episodes} episode{'' if r.episodes == 1 else 's'} ({r.steps:,} steps) into {out_dir}, "
        f"every frame as recorded" + (f"; {len(r.skipped)} already there, skipped" if r.skipped else "")
    )


def _print_seed_import(s: Any, action_set: str, out_dir: Path) -> None:
    layouts = ", ".join(f"{n} {k}" for k, n in sorted(s.layouts.items())) or "none"
    out.print(
        f"imported {s.episodes} episode{'' if s.episodes == 1 else 's'} ({s.steps:,} steps) from "
        f"{s.files - len(s.skipped)} of {s.files} files into {out_dir}; label layouts: {layouts}"
    )
    for name, why in s.skipped:
        out.print(f"skipped {name}: {why}")
    if s.remapped:
        out.print(
            "actions mapped to another action of the "
            + action_set
            + " set: "
            + ", ".join(f"{k} ({n:,})" for k, n in s.remapped.most_common())
        )
    if s.short_segments:
        out.print(
            f"{s.short_segments} piece{'' if s.short_segments == 1 else 's'} of one frame between resets left out"
        )


def _train_rewend(store: Path, cfg: Any, out_dir: Path, resume: bool, force: bool, quiet: bool) -> None:
    from mario_kit.world_model.training.rewend import SCORES_FILE, train_rewend

    if resume:
        raise UserError("--resume does not apply to the reward and end model (it trains in minutes): run it again")
    r = train_rewend(store, cfg, out_dir, force=force, progress=not quiet)
    t = r["test"]
    out.print(f"rewend: {r['steps']} steps on {r['train_steps']:,} training steps of the store")
    if t:
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731  (none predicted, or none there)
        out.print(
            f"test ({t['steps']:,} steps): reward error {t['reward_mae']:.3f} (always 0: {t['zero_reward_mae']:.3f}), "
            f"death precision/recall {f(t['death_precision'])}/{f(t['death_recall'])} of {t['deaths']}, "
            f"flag {f(t['flag_precision'])}/{f(t['flag_recall'])} of {t['flags']}"
        )
    out.print(f"run: {out_dir} ({SCORES_FILE})")


@app.command()
def train(
    store: Path = typer.Option(..., "--store", help="Training store (from `mario-kit dataset build`)."),
    out_dir: Path = typer.Option(..., "--out", help="Run folder (checkpoints, config, logs)."),
    config: Optional[str] = typer.Option(
        None,
        "--config",
        help="Preset: seed (the seed project's settings), cpu, tiny "
        "[a new run: cpu on a CPU, seed with CUDA; --resume: the run's own config.json].",
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a setting: key=value (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    force: bool = typer.Option(False, "--force", help="Start over in a folder that holds a run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train the world model (denoiser, upsampler, or both). Multi-GPU: torchrun --nproc-per-node N -m mario_kit train ..."""
    import math

    from mario_kit.trust import read_json
    from mario_kit.world_model.training.presets import default_preset, get_config, resume_config
    from mario_kit.world_model.training.trainer import train as run

    if resume and (out_dir / "config.json").is_file():
        cfg = resume_config(read_json(out_dir / "config.json", what="run config"), config, overrides)
    else:
        if resume:
            out.print(f"{out_dir} holds no run yet: starting a new one")
        if config is None:
            config, why = default_preset()
            out.print(f"config: {config} ({why})")
        cfg = get_config(config, overrides)
    if cfg.stage == "rewend":
        _train_rewend(store, cfg, out_dir, resume, force, quiet)
        return
    summary = run(store, cfg, out_dir, resume=resume, force=force, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports for all
        return
    for stage, r in summary.stages.items():
        if r.test_loss is None:
            test = "no test loss yet (first epoch end), "
        elif math.isnan(r.test_loss):
            test = "no test split (run `mario-kit dataset split` before `dataset build`), "
        else:
            test = f"test loss {r.test_loss:.4f}, "
        out.print(
            f"{stage}: step {r.step}, train loss {r.train_loss:.4f}, {test}"
            f"{r.samples_per_s} samples/s, {r.parameters:,} parameters"
        )
    out.print(f"run: {out_dir}")
    if summary.interrupted:
        out.print("interrupted: checkpoint saved; continue with --resume")
        raise typer.Exit(130)


# `--steps` is recorded steps in every command; the world-model commands' former `--steps` (denoising
# steps, dream length) are refused with a hint for one release.
MOVED_STEPS = typer.Option(None, "--steps", hidden=True)


def _moved(value: Optional[int], new: str) -> None:
    if value is not None:
        raise UserError(f"--steps here is now {new} (--steps means recorded steps, in `collect`): use {new} {value}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder (from `mario-kit train`)."),
    store: Path = typer.Option(..., "--store", help="Training store with a test split."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Write evaluation.json and rollout_psnr.png here [RUN/eval]."
    ),
    windows: int = typer.Option(64, min=1, help="Test windows for next-frame scores."),
    rollouts: int = typer.Option(8, min=1, help="Rollouts per horizon (and per place, --place-windows)."),
    horizons: str = typer.Option("1,8,32,64", help="Comma list of rollout lengths."),
    place_windows: int = typer.Option(
        16, min=0, help="Next-frame windows per stage and 512-px x bucket (and 32-step rollouts; 0: none)."
    ),
    seed: int = typer.Option(0, **SEED, help="Seed of the window choice and the sampler."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    sampling_steps: Optional[int] = typer.Option(
        None, "--sampling-steps", min=1, help="Denoising steps of the sampler (default: the run's)."
    ),
    upsampler_steps: Optional[int] = typer.Option(None, min=1, help="Upsampler denoising steps (default: the run's)."),
    old_steps: Optional[int] = MOVED_STEPS,
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA weights when the run has them."),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        help="Override a sampler setting for this evaluation: "
        "sampler.KEY=VALUE or upsampler_sampler.KEY=VALUE (repeatable).",
    ),
) -> None:
    """Score the world model on the test split against the copy-last-frame baseline (and the upsampler
    against bicubic; an upsampler-only run gets that part alone)."""
    from mario_kit.world_model.training.evaluate import EvaluateConfig, evaluate as run_eval

    _moved(old_steps, "--sampling-steps")
    try:
        hs = tuple(int(h) for h in horizons.split(",") if h)
        if not hs or min(hs) < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"--horizons takes a comma list of integers >= 1, got {horizons!r}") from None
    r = run_eval(_config(EvaluateConfig, locals(), horizons=hs, out=out_dir or run / "eval", sampler_set=overrides))
    out.print(_evaluation_table(r))
    out.print(f"written: {(out_dir or run / 'eval') / 'evaluation.json'}")


def _evaluation_table(r: Evaluation) -> Table:
    """The evaluation as one table: each measure for the model and its baseline (the copy-last
    frame; bicubic for the upsampler alone; the scroll oracle, the last frame moved by the real
    scroll, where its row says so)."""
    from mario_kit.datasets.format import PLACE_PX
    from mario_kit.world_model.training.scores import PLACE_HORIZON

    t = Table(title=f"step {r.step}, test split: model vs baseline")
    t.add_column("measure", justify="left")
    for name in ("n", "model", "baseline"):
        t.add_column(name, justify="right")
    for v, label in ((r.next_frame_low_res, "next frame 64x60"), (r.next_frame_full_res, "next frame 256x240")):
        if v is not None:
            m, c = v.model, v.copy_last
            for stat in ("mean", "median", "pooled"):
                t.add_row(
                    f"{label}: PSNR {stat}", str(v.windows), _num(getattr(m.psnr, stat)), _num(getattr(c.psnr, stat))
                )
            t.add_row(f"{label}: SSIM mean", str(v.windows), _num(m.ssim.mean), _num(c.ssim.mean))
    if (u := r.upsampler_alone) is not None:
        t.add_row("upsampler vs bicubic: PSNR pooled", str(u.windows), _num(u.upsampler.psnr), _num(u.bicubic.psnr))
        t.add_row(
            "upsampler vs bicubic: SSIM mean", str(u.windows), _num(u.upsampler.ssim.mean), _num(u.bicubic.ssim.mean)
        )
    for h, ro in r.rollouts.items():
        _rollout_rows(t, f"rollout of {h}", ro)
    for p in r.by_place:
        where = f"{p.level} x {p.x_from}-{p.x_from + PLACE_PX - 1}"
        t.add_row(f"{where}: next frame PSNR pooled", str(p.windows), _num(p.next_frame_model_psnr), _num(p.next_frame_copy_last_psnr))  # fmt: skip
        if p.rollouts:
            t.add_row(f"{where}: rollout of {PLACE_HORIZON}, last step", str(p.rollouts), _num(p.rollout_model_psnr_last), _num(p.rollout_copy_last_psnr_last))  # fmt: skip
    return t


def _rollout_rows(t: Table, name: str, v: RolloutScores) -> None:
    n = str(v.rollouts)
    t.add_row(f"{name}: PSNR at the last step", n, _num(v.model_psnr_last), _num(v.copy_last_psnr_last))
    t.add_row(f"{name}: PSNR mean over steps", n, _num(v.model_psnr_mean), _num(v.copy_last_psnr_mean))
    lo, hi = v.model_gap_last_ci90
    t.add_row(f"{name}: lead over copy-last dB [90% CI]", n, f"{v.model_gap_last:+.2f} [{lo:+.1f},{hi:+.1f}]", "")
    t.add_row(f"{name}: last-step PSNR vs scroll oracle", n, _num(v.model_psnr_last), _num(v.scroll_oracle_psnr_last))
    t.add_row(f"{name}: SSIM at the last step", n, _num(v.model_ssim_last), _num(v.copy_last_ssim_last))
    t.add_row(
        f"{name}: PSNR where the game changed", n, _num(v.model_changed_psnr_last), _num(v.copy_last_changed_psnr_last)
    )
    t.add_row(
        f"{name}: scroll error px (real {v.real_scroll_px:.1f})",
        n,
        _num(v.scroll_error_px),
        _num(v.copy_last_scroll_error_px),
    )
    if v.model_psnr_last_full_res is not None:
        t.add_row(
            f"{name}: PSNR at the last step, 256x240",
            n,
            _num(v.model_psnr_last_full_res),
            _num(v.copy_last_psnr_last_full_res),
        )


def _num(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3f}" if abs(v) < 1.5 else f"{v:.2f}"


@app.command()
def play(
    run: Optional[Path] = typer.Option(
        None, "--run", help="Run folder with a trained denoiser (and upsampler) [the model shipped with mario-kit]."
    ),
    spawn: Optional[Path] = typer.Option(
        None,
        "--spawn",
        help="Spawns file (`mario-kit dataset spawn`) [the spawns shipped with the model; with --run, required].",
    ),
    level: Optional[str] = typer.Option(None, help="Only the spawns on these stages (a comma list of W-S)."),
    sampling_steps: Optional[int] = typer.Option(
        None,
        "--sampling-steps",
        min=1,
        help="Denoising steps (default: the run's "
        "sampler, 3, on a GPU; 1 on a CPU, a higher frame rate at the same PSNR: "
        "docs/BENCHMARKS.md).",
    ),
    old_steps: Optional[int] = MOVED_STEPS,
    upsampler: bool = typer.Option(
        True,
        "--upsampler/--no-upsampler",
        help="Show 240x256 frames: the run's diffusion upsampler, else its tile upsampler (tiles.h5, "
        "the shipped model's); with neither, or --no-upsampler, the 64x60 frames enlarged.",
    ),
    upsampler_steps: Optional[int] = typer.Option(
        None,
        min=1,
        help="Upsampler denoising steps (default: the run's; 1 is faster than the `cpu` preset's 2, and softer).",
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    bf16: Optional[bool] = typer.Option(
        None,
        "--bf16/--fp32",
        help="bfloat16 autocast for generation (default: on a CPU with "
        "bf16 instructions, AVX512-BF16 or AMX, where it is faster; off on CUDA, "
        "where fp32 is faster at batch 1).",
    ),
    compile: bool = typer.Option(
        False, "--compile", help="torch.compile the models (faster on a CPU after a minute or so of compiling)."
    ),
    cuda_graph: Optional[bool] = typer.Option(
        None,
        "--cuda-graph/--no-cuda-graph",
        help="Replay each model step as one "
        "CUDA graph (default: on CUDA; a multiple of the eager frame rate, the same frames).",
    ),
    fps: float = typer.Option(15.0, help="Target model frames/s (15 = NES speed at frame skip 4)."),
    scale: int = typer.Option(3, help="Window scale."),
    keymap: Optional[Path] = typer.Option(None, help="Key mapping JSON file."),
    record: Optional[Path] = typer.Option(None, help="Save each spawn session as an episode in this folder."),
    seed: int = typer.Option(0, **SEED, help="Sampler seed."),
) -> None:
    """Play inside the world model: arrows, X jump, Z run; Enter next spawn, R restart, P pause, Esc quit."""
    from mario_kit.world_model.programs.play import PlayConfig, play as run_play

    _moved(old_steps, "--sampling-steps")
    r = run_play(_config(PlayConfig, locals(), spawns=spawn))
    out.print(
        f"{r.frames} frames generated at {r.model_fps:.1f} frames/s"
        + (f"; recorded {len(r.episodes)} episodes into {record}" if record else "")
    )


@app.command()
def dream(
    run: Optional[Path] = typer.Option(None, "--run", help="Run folder [the model shipped with mario-kit]."),
    episode: Path = typer.Option(..., "--episode", help="An episode file (ideally from the test split)."),
    start: int = typer.Option(..., "--start", help="Step T to start from (>= 4)."),
    length: int = typer.Option(
        32, "--length", min=1, help="Steps to dream (recorded steps of the real game beside it)."
    ),
    old_steps: Optional[int] = MOVED_STEPS,
    out_file: Path = typer.Option(Path("dream.gif"), "--out", help="GIF to write (a .csv and .png land beside it)."),
    policy: str = typer.Option("recorded", help="recorded (the episode's actions) or random."),
    upsampler: bool = typer.Option(
        True,
        "--upsampler/--no-upsampler",
        help="Full-res frames from the run's upsampler, diffusion or tiles (else the 64x60 frames enlarged).",
    ),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    seed: int = typer.Option(0, **SEED, help="Seed of the sampler and the random policy."),
) -> None:
    """The real game (rebuilt by replay) and the world model from the same step with the same actions."""
    from mario_kit.world_model.programs.compare import CompareConfig, compare

    _moved(old_steps, "--length")
    r = compare(_config(CompareConfig, locals(), out=out_file))
    if r.frames < r.requested:
        err.print(
            f"note: dreamed {r.frames} of the {r.requested} steps asked for: the recorded episode "
            f"(or the real game) ends there"
        )
    out.print(
        f"{r.frames} steps: PSNR {r.psnr_low_res_pooled:.2f} dB (64x60), {r.psnr_full_res_pooled:.2f} dB (240x256), "
        "pooled over the steps"
    )
    out.print(f"written: {r.gif}, {r.csv}, {r.plot}")


def main() -> None:
    """Console entry point. Bad input (a UserError, a usage error from the parser, a file that
    cannot be read or written) becomes one line on stderr and exit code 2; Ctrl-C exits 130."""
    from typer import Abort
    from typer._click import exceptions as click_exc

    try:
        code = app(standalone_mode=False, prog_name="mario-kit")
    except UserError as e:
        _fail(str(e))
    except click_exc.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `mario-kit` or a bare group: the help
            e.show()
            sys.exit(2)
        _fail(f"{e.format_message()} (see {e.ctx.command_path if e.ctx else 'mario-kit'} --help)")
    except click_exc.ClickException as e:
        _fail(e.format_message())
    except (Abort, KeyboardInterrupt):
        sys.exit(130)
    except OSError as e:  # disk full, permissions, a path under a file: what the OS said, on one line
        where = f" {e.filename}" if e.filename else ""
        _fail(f"cannot access{where}: {e.strerror or e}")
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message holds
    sys.exit(2)


if __name__ == "__main__":
    main()
