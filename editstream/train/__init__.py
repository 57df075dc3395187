"""`editstream train`: fine-tune a student on an export directory with TRL (the `train` extra).

`plan` is the pure part (methods, hyperparameters, dataset checks, the model card) and needs
neither torch nor TRL; `run` is the thin edge that loads the model and calls the trainers;
`gguf` finds llama.cpp's own converter (from the llama-cpp-python source distribution the
Makefile builds `llama-server` from) and writes the GGUF that llama.cpp serves.
"""
