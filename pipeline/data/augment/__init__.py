"""Training augmentation beyond the crop and flip: the options under data.train that are off by default.

    levers.py        TrainLevers: which of them are on, their per-image draws and their graph stage, together
    auto_augment.py  TrivialAugment, RandAugment, AutoAugment (nvidia.dali.auto_aug), choices drawn in numpy
    erasing.py       random erasing (timm's RandomErasing), rectangles drawn in numpy
    progressive.py   progressive resizing: the training crop side over the run (FFCV's schedule)

The crop itself is each DALI graph's own first stage, drawn beside the callback that feeds it: the
reference augmentation's side, interpolation, crop and flip in dali_graph.py (`AugmentSpec`), the
random-resized crop's window in crops.py. What these options do to accuracy and speed: docs/data.md.
"""
