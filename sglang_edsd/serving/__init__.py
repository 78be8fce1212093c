"""The SGLang side of EDSD: the registered spec algorithm and the draft model class."""
