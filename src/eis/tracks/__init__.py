"""Benchmark tracks: what a tool is asked and how its answer is scored against the sealed truth."""


def load_builtin_tracks() -> None:
    """Import the built-in track modules so that their registrations run."""
    import eis.tracks.challenge  # noqa: F401
    import eis.tracks.circuits  # noqa: F401
    import eis.tracks.detect  # noqa: F401
    import eis.tracks.faithfulness  # noqa: F401
    import eis.tracks.feature_ablation  # noqa: F401
    import eis.tracks.feature_concepts  # noqa: F401
    import eis.tracks.feature_lm_steering  # noqa: F401
    import eis.tracks.feature_steering  # noqa: F401
    import eis.tracks.feature_usefulness  # noqa: F401
    import eis.tracks.features  # noqa: F401
    import eis.tracks.lm_detect  # noqa: F401
    import eis.tracks.lm_elicit  # noqa: F401
    import eis.tracks.lm_trigger  # noqa: F401
    import eis.tracks.localize  # noqa: F401
    import eis.tracks.repair  # noqa: F401
    import eis.tracks.sanity  # noqa: F401
    import eis.tracks.synthesize  # noqa: F401
