"""Layer 5, studies: which runs each study needs and their identities, launching them, the studies' results,
the plan, the spread and the premise."""
from dwt_lib.studies.identity import all_run_names, finetune_run, named_run, seed_runs, study_runs  # noqa: F401
