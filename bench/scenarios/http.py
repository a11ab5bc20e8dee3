"""stub"""

from bench.harness import CaseSpec, Config


def specs(env: object, config: Config) -> list[CaseSpec]:
    return []
