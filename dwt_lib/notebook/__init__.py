"""Layer 6, notebook: figures, the notebooks' knobs and the teacher-prediction view."""
