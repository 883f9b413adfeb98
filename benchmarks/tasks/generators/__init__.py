"""Offline dataset generators: the benchmarks' own recipes, run here where downloads are impossible.

    from modebench.benchmarks.tasks.generators import generate
    result = generate("pointmaze-umaze", preset="small", seed=0)   # -> Minari dataset id, stats

Every generator is deterministic given (preset or size, seed), shows progress bars, writes
standard Minari datasets (and OGBench's npz layout for the OGBench recipes), measures random
and expert reference returns, and names its output as LOCAL (`modebench-local/...`). Sizes:
`full` is the published dataset's size, `small` fits this project's CPU machines (the
`maze2d-local` / `ogbench-local` suites use it), `tiny` is for tests; any integer size works
(`size=`), named `n<size>`.

| generator                          | recipe                                   | unit     | full      |
|------------------------------------|------------------------------------------|----------|-----------|
| pointmaze-{umaze,medium,large}     | D4RL maze2d (planner + PD, noise 0.5)    | steps    | 1M/2M/4M  |
| ogbench-pointmaze-*-navigate       | OGBench navigate (BFS subgoal, noise 0.5)| episodes | 1000      |
| ogbench-{cube-single,cube-double,scene,puzzle-3x3}-play | OGBench play (plan oracles, 0.1 / 0.5) | episodes | 1000 |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from modebench.algorithms.config import ConfigError
from modebench.benchmarks.tasks.generators.common import (
    GenerationResult,
    local_root,
    minari_root,
)

REFERENCE_EPISODES = {"tiny": 5, "small": 20, "full": 100}


@dataclass(frozen=True)
class Generator:
    """One offline generator; a family (Maze2DGenerator, OGBenchGenerator) says how it runs,
    where its output lives and which env its datasets record."""

    name: str
    unit: str  # what a size counts: "steps" or "episodes"
    presets: dict[str, int]
    description: str
    reference_episodes: dict[str, int] = field(default_factory=lambda: dict(REFERENCE_EPISODES))
    family: ClassVar[str] = ""

    def size(self, preset: str | None = None, size: int | None = None) -> tuple[str, int]:
        """(preset name, size) for a preset or an explicit size."""
        if size is not None:
            if size < 1:
                raise ConfigError(f"{self.name}: size must be >= 1 {self.unit}, got {size}")
            return f"n{size}", int(size)
        preset = preset or "small"
        if preset not in self.presets:
            raise ConfigError(f"{self.name}: unknown preset {preset!r}; valid: {', '.join(self.presets)} (or give a size)")
        return preset, self.presets[preset]

    def n_reference(self, preset: str) -> int:
        return self.reference_episodes.get(preset, REFERENCE_EPISODES["small"])

    def run(self, n: int, seed: int, preset: str, n_ref: int, progress: bool, force: bool) -> GenerationResult:
        raise NotImplementedError

    def output(self, preset: str, seed: int) -> dict[str, str]:
        raise NotImplementedError

    def complete(self, preset: str, seed: int) -> bool:
        raise NotImplementedError

    def eval_env(self):
        raise NotImplementedError


class Maze2DGenerator(Generator):
    """D4RL maze2d recipe on gymnasium-robotics PointMaze; Minari output."""

    family = "maze2d"

    @property
    def maze(self) -> str:
        return self.name.split("-", 1)[1]

    def run(self, n, seed, preset, n_ref, progress, force):
        from modebench.benchmarks.tasks.generators import maze2d

        return maze2d.generate(self.maze, n, seed, preset, n_ref, progress=progress, force=force)

    def output(self, preset, seed):
        from modebench.benchmarks.tasks.generators.maze2d import dataset_id

        return {"minari": dataset_id(self.maze, preset, seed)}

    def complete(self, preset, seed):
        from modebench.benchmarks.tasks.generators.common import complete_minari

        return complete_minari(self.output(preset, seed)["minari"])

    def eval_env(self):
        from modebench.benchmarks.tasks.generators.maze2d import make_eval_env as make

        return make(self.maze)


class OGBenchGenerator(Generator):
    """OGBench's own recipes; npz (OGBench's layout) and Minari output."""

    family = "ogbench"

    def run(self, n, seed, preset, n_ref, progress, force):
        from modebench.benchmarks.tasks.generators import ogbench_gen

        return ogbench_gen.generate(self.name, n, seed, preset, n_ref, progress=progress, force=force)

    def output(self, preset, seed):
        from modebench.benchmarks.tasks.generators.ogbench_gen import (
            minari_id,
            npz_path,
        )

        return {"minari": minari_id(self.name, preset, seed), "npz": str(npz_path(self.name, preset, seed))}

    def complete(self, preset, seed):
        from modebench.benchmarks.tasks.generators.ogbench_gen import local_npz_marker

        return local_npz_marker(self.name, preset, seed) is not None

    def eval_env(self):
        from modebench.benchmarks.tasks.generators.ogbench_gen import RECIPES, make_env

        return make_env(RECIPES[self.name].singletask_env)


def _maze_generators() -> dict[str, Generator]:
    from modebench.benchmarks.tasks.generators.maze2d import MAZES

    return {
        f"pointmaze-{maze}": Maze2DGenerator(
            f"pointmaze-{maze}", "steps",
            {"tiny": 2 * spec.horizon, "small": 100_000, "full": spec.published_steps},
            f"gymnasium-robotics {spec.env_id}, D4RL maze2d recipe (planner + PD waypoint controller, noise 0.5), "
            f"fixed goal {spec.goal_cell}, {spec.horizon}-step episodes",
        )
        for maze, spec in MAZES.items()
    }


def _ogbench_generators() -> dict[str, Generator]:
    from modebench.benchmarks.tasks.generators.ogbench_gen import RECIPES

    small = {"navigate": 100, "play": 20}
    out = {}
    for name, recipe in RECIPES.items():
        presets = {"tiny": 2, "small": small[recipe.kind], "full": recipe.published_episodes}
        if "scene" in name or "puzzle" in name or "double" in name:
            presets["small"] = 10
        out[name] = OGBenchGenerator(
            name, "episodes", presets,
            f"OGBench {recipe.dataset} recipe ({recipe.kind}, noise {recipe.noise}), 1000 transitions per episode, "
            f"default single task {recipe.default_task}",
        )
    return out


def generators() -> dict[str, Generator]:
    return {**_maze_generators(), **_ogbench_generators()}


def get_generator(name: str) -> Generator:
    table = generators()
    if name not in table:
        raise ConfigError(f"unknown generator {name!r}; valid: {', '.join(table)}")
    return table[name]


def generate(name: str, preset: str | None = "small", seed: int = 0, size: int | None = None,
             progress: bool = True, force: bool = False, reference_episodes: int | None = None) -> GenerationResult:
    """Generate (or find, when already complete) a local dataset. Safe to call from several
    processes at once: one generates under a file lock, the others wait and then find it."""
    gen = get_generator(name)
    preset_name, n = gen.size(preset, size)
    return gen.run(n, seed, preset_name, reference_episodes or gen.n_reference(preset_name), progress, force)


def output_id(name: str, preset: str | None = "small", seed: int = 0, size: int | None = None) -> dict[str, str]:
    """Where a generator's output is (or will be), without generating: {"minari": id, "npz": path}."""
    gen = get_generator(name)
    return gen.output(gen.size(preset, size)[0], seed)


def is_generated(name: str, preset: str | None = "small", seed: int = 0, size: int | None = None) -> bool:
    gen = get_generator(name)
    return gen.complete(gen.size(preset, size)[0], seed)


def make_eval_env(name: str):
    """The evaluation env a generator's Minari dataset records (no data needed)."""
    return get_generator(name).eval_env()


__all__ = [
    "GenerationResult",
    "Generator",
    "generate",
    "generators",
    "get_generator",
    "is_generated",
    "local_root",
    "make_eval_env",
    "minari_root",
    "output_id",
]


def describe(name: str) -> dict[str, Any]:
    gen = get_generator(name)
    return {"name": gen.name, "family": gen.family, "unit": gen.unit, "presets": gen.presets, "description": gen.description}
