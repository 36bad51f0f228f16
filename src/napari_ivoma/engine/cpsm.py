"""CPSM: Control-Point-based Scribbles-to-Mask (Le et al., AAAI-21; Tran, Vu-Le & Tran 2020).

Weight-free implementation:

1. *Control points* are sampled along every scribble (:func:`control_points`); they
   are hard constraints of the output.
2. An *appearance model* (extra-trees on multiscale colour / edge / blob / texture
   features for colour frames, on the intensity for grey ones, :mod:`.appearance`;
   grey frames add per-object local intensity thresholds) is learned from the pixels under the scribbles,
   automatic background samples taken beyond an object-dependent distance from
   the strokes (or from the prior mask in correction rounds), and the confirmed
   masks of the video kept in a :class:`MemoryPool`.
3. A *graph cut* (s-t min cut, contrast-sensitive 8-connected smoothness, soft
   spatial prior around each object's strokes) separates the scribbled objects
   from the rest; one round of self-training refines the appearance model from
   the first cut, and re-decides a band around its outline with the help of a
   model of the finest-scale colour learned across that outline.
4. The foreground is split among objects by a seeded watershed from their
   strokes on its distance transform, so touching objects (e.g. nuclei) do not merge; foreground blobs
   reached by no stroke are dropped.
5. Large frames are segmented shrunk, then refined by a full-resolution graph
   cut in a band around the outline.
6. In correction rounds only the objects named by the new scribbles (and the
   objects these scribbles touch) are re-segmented, the prior mask enters the
   unary term, and only changes connected to a new scribble are kept.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ._masks import bounding_box, box_slices, pieces, still_pieces
from .appearance import (
    FINEST_COLOUR,
    MemoryPool,
    PixelClassifier,
    _check_image,
    base_channels,
    pixel_features,
)
from .graphcut import cut
from .motion import MOTION_CHANNELS
from .scribbles import (
    NO_LABEL,
    Scribble,
    clip_scribble,
    control_points,
    disc_offsets,
    paint_scribble,
    rasterize_scribbles,
)

__all__ = ["CPSMParams", "PreparedFrame", "prepare_frame", "scribbles_to_mask", "rasterize_control_points"]

_HARD = 1e6


@dataclass
class CPSMParams:
    """Parameters of :func:`scribbles_to_mask` (defaults = best measured, see BENCHMARKS.md).

    Attributes
    ----------
    spacing : float
        Distance in pixels between control points along a scribble.
    cp_radius : int
        Radius of the disc painted around each control point (hard constraint).
    bg_start : float
        Automatic background starts at ``bg_start * extent`` from a stroke, extent =
        diagonal of the stroke's bounding box.
    click_core : float
        For a click, the disc of radius ``click_core * r`` around it is taken as object sample.
    click_scale : float
        For a click, background starts at ``click_scale * r`` (r = blob radius found by
        a Laplacian-of-Gaussian scale search at the click).
    prior_scale : float
        Correction rounds: background starts at ``prior_scale * sqrt(area / pi)`` from the
        prior mask of the object.
    min_start : float
        Lower bound (pixels) of the distance where background starts.
    min_start_share : float
        Colour frames, stroked objects without a prior mask: a higher lower bound, this share of
        the frame's shorter side (with a prior, its area gives the object's size; for a click,
        the blob under it).  A stroke through the middle of a compact object is short for the
        object's size (sample clip's plaid disc: stroke 22 px long, object 45 x 64 px;
        background started inside it, J 0.12; natural sample clip round 1, 5 frames: J 0.485 ->
        0.771 with 0.1).  DAVIS objects are large and their strokes long: unchanged (applied to
        corrections too, it changed a car-shadow correction: AUC 0.760 -> 0.745).  Grey frames
        (touching nuclei) keep ``min_start``.
    auto_weight : float
        Weight of the automatic background samples (x 0.3 when the user drew background).
    ramp : float
        Automatic background samples are weighted up linearly over ``ramp * start`` beyond the start.
    spatial_weight : float
        Penalty (nats) per ``start`` distance beyond the start for foreground.
    max_reach : float
        Foreground is impossible beyond ``max_reach * start`` from an object's strokes/prior.
    smooth : float
        Weight of the contrast-sensitive smoothness term of the graph cut.
    smooth_correction : float
        The same on a colour frame that already has a mask (a correction round) for objects of a
        mean radius of ``smooth_radii[1]`` px or more; ``smooth`` below ``smooth_radii[0]``, in
        between linearly; 0 = ``smooth``.  DAVIS 8 rounds, 3 seeds, smoothness 2 / 4 / 6 / 8 for
        large objects: corrected frames J 0.846 / 0.861 / 0.869 / 0.868, corrections worse
        3 / 1 / 0 / 1, AUC 0.807 / 0.809 / 0.816 / 0.814, J&F r8 0.864 / 0.865 / 0.874 / 0.872.
    smooth_radii : (float, float)
        See ``smooth_correction``.
    prior_weight : float
        Cost (nats) of disagreeing with the prior mask in correction rounds by adding an object
        pixel (DAVIS 8-round benchmark: 1.0 -> 0.3 raised AUC 0.778 -> 0.787, J&F r8 0.825 ->
        0.840; SIM+ unchanged); removing one costs ``prior_removal_weight``.
    prior_removal_weight : float
        Cost (nats) of removing a pixel the prior calls object, where it is trusted (see
        ``distrust``); 0.3 until session 11, see ``distrust_fit``.
    distrust : float
        Correction rounds: the prior is ignored within ``distrust * sqrt(area / pi)`` of a new
        scribble, on its side only: object pixels near a new background stroke, background
        pixels near a new object stroke (one-sided: corrected frames J 0.843 -> 0.846 on the
        105 recorded DAVIS corrections).
    distrust_fit : float
        A new background stroke drawn into the prior object distrusts it only within this many
        times each stroke pixel's distance to the prior's outline (at least ``min_start``, at
        most the ``distrust`` zone): drawn through the middle of a wrongly taken strip, it
        speaks for the strip, not for the object beside it (0 = the whole zone).  Together with
        ``prior_removal_weight`` 0.8 (was 0.3) and ``bg_stroke_level`` 0 (was 1.0): a background
        stroke through the shaded ground between a bear's legs, coloured like the legs in shade,
        took all four lower legs with it (seed 1, frame 15: 0.910 -> 0.868); all five corrections
        that made their frame worse in the five-seed DAVIS runs were of that kind; each of the
        three changes alone left some.  All three: 175 recorded corrections J 0.8666 -> 0.8667,
        worse 1 -> 1 (over three CPSM draws 10 -> 1 of 525); bear corrections of seeds 1 and 4
        0.922 -> 0.938, worse 3 -> 0.  DAVIS 8 rounds, seeds
        0-4: AUC 0.833 -> 0.834, J&F r8 0.878 -> 0.882, corrected frames 0.879 -> 0.882,
        corrections worse 5 -> 1 (dog +0.015 AUC, car-shadow +0.002, bear +0.006, blackswan
        -0.003, breakdance -0.014).
    distrust_fit_object : float
        The same for a new object stroke drawn outside the prior object: it distrusts the
        prior's background only within this many times each stroke pixel's distance to the
        prior object (at least ``min_start``, at most the ``distrust`` zone): drawn along a thin
        sliver the mask missed, it speaks for the sliver, not for the shadow beyond it.  Beyond
        that reach, within the zone, adding an object pixel costs ``prior_firm_weight``.
        0 = the whole zone.  The one correction of 350 that made its frame worse (DAVIS seed 0,
        car-shadow frame 17: a stroke along the car's underside took the moving shadow under
        it, 0.856 -> 0.849) -> 0.898; the 175 recorded corrections over three CPSM draws: J
        0.9081 -> 0.9080, worse 3 -> 0 of 525 (``distrust_fit_object`` 3: 0.9079, 0; the weight 1
        instead of 2 leaves the shadow).  DAVIS 8 rounds, ten seeds: AUC 0.845 -> 0.847, J&F r8
        0.892 -> 0.894, corrected frames 0.907 -> 0.909 (nine seeds of ten at 0.90 or more, was
        eight), corrections that made their frame worse 1 -> 0 of 350.
    prior_firm_weight : float
        See ``distrust_fit_object``.
    self_train : int
        Rounds of retraining the appearance model on the previous cut.
    motion_veto : float
        When the frame's motion is given and the strokes move against the background, all of
        them and together (10th-percentile residual motion to a neighbouring frame above
        ``motion_moving`` px, spread of their motion vectors below ``motion_coherence`` times
        their mean: a car, a swan, not a dancer's limbs), pixels that stay still (below
        ``motion_static`` px) are background: samples, and this cost (nats) for being object.
        0 = off.  DAVIS, 3 seeds: AUC 0.781 -> 0.789 (cost 1) -> 0.793 (cost 2), J&F r8 0.834
        -> 0.837 -> 0.844.
    motion_moving, motion_static, motion_coherence : float
        See ``motion_veto``.
    motion_apart : float
        When an object moves as one rigid body (spread of the motion vectors of its strokes --
        and in a correction of its trusted prior mask -- below ``motion_rigid`` times their
        median), pixels moving unlike it -- their vector further than ``motion_apart`` px and
        ``motion_apart_share`` times its speed from its median vector -- are vetoed like still
        pixels (a swan's wake and rippling reflections move, but not with the swan); in a
        correction only outside the prior object (a part may move apart: a leg).  0 = off.
        15 recorded DAVIS round-1 frames: J 0.753 -> 0.806 (blackswan 0.60 -> 0.86; dancer, dog
        and bear do not move rigidly and are unchanged).  DAVIS 8 rounds, 3 seeds: round-1 J
        0.753 -> 0.806, AUC 0.816 -> 0.828, corrected frames 0.869 -> 0.885, J&F r8 0.874 ->
        0.875 (round 1 only: 0.827, 0.881, 0.873).
    motion_rigid, motion_apart_share : float
        See ``motion_apart``.
    still_near : float
        Half of the background samples of vetoed pixels (still or moving apart) are drawn within
        this many start distances of the object, the other half anywhere they are (0 = all
        anywhere).  The veto's region is large and the informative samples are next to the
        object: a textured disc moving beside a still block of its own texture took 587 block
        pixels with the moving-apart veto (470 with the still veto alone), 0 with this.  DAVIS 8
        rounds, 3 seeds: AUC 0.828 -> 0.827, J&F r8 0.875 -> 0.876, round-1 J 0.806 -> 0.808,
        corrected frames 0.885 -> 0.885, corrections worse 0 -> 2 (-0.001, -0.018).
    motion_object : float
        First round (no prior mask): when the strokes move clearly but slowly (median residual
        motion to a neighbouring frame between ``motion_moving`` and ``motion_slow`` px) and at most
        15% of the automatic background around them moves, pixels near the strokes (within
        ``novel_zone`` start distances) that move over every such neighbouring frame, eroded by
        6 px, pay this cost (nats) to be background (0 = off).  A walking bear's sunlit back is
        coloured unlike the dark flank the stroke runs along; the colours alone took it with some
        draws of the samples and not with others (J 0.75 or 0.90); it moves with the bear and the
        rocks around it do not.  Round 1 over five CPSM seeds: bear 0.805 -> 0.913, the other DAVIS
        objects move faster and are untouched.  Faster objects are left out because the optical
        flow smears their motion onto the still ground around them (a breakdancer's limbs: 44% of
        its area in false positives with the cost, against 20% without; with session 15's colour
        change, ``motion_change``, round-1 J rose and the whole benchmark lost: not used here).
    motion_slow : float
        See ``motion_object``.
    moving_parts : float
        Corrections: when the object moves clearly (median residual motion to a neighbouring
        frame above ``motion_moving`` px) and at most 15% of the automatic background around it
        moves, pixels outside the prior object and beyond the new strokes' reach (where the prior
        is trusted) that move over every such neighbouring frame, eroded by ``moving_parts_erode``
        px, pay this cost (nats) to be background (0 = off).  The benchmark's annotator strokes the
        largest error region of each label; the others -- a walking dog's shaded head and chest, a
        dancer's swung leg -- are coloured much like the ground, but move with the body over
        ground that stays still.  Within the strokes' reach the strokes speak: a car's shadow
        moves with the car, and without this limit a stroke along the car's underside took the
        shadow (3 of 21 recorded car corrections lost 0.06-0.08).  A moving region that comes
        within ``moving_parts_erode`` + 2 px of a new background stroke is the stroke's too: a
        swan's reflection moves with the swan, and a stroke on one end of it says what it is
        (with DAVIS's robot's strokes, 5 of 175 corrections were made worse without this, 0 with
        it).  175 recorded DAVIS corrections (seeds 0-4): J 0.882 -> 0.890 (0.893 without the
        stroke rule; dog 0.886 -> 0.903, breakdance 0.799 -> 0.825); DAVIS 8 rounds, five seeds:
        corrected frames 0.882 -> 0.894, AUC 0.834 -> 0.839, J&F r8 0.882 -> 0.887 (lowest seed
        0.877 -> 0.882), corrections worse 1 of 175 as before.  "The object moves" is read on its
        strokes and its trusted prior (since session 14: not on distrusted prior pixels, such as
        a still patch of wall the prior holds, which kept a dancer's median under 1.5 px).
    moving_parts_erode : int
        See ``moving_parts``: the optical flow smears a fast object's motion onto the still ground
        beside it (eroding by 6 px instead of 14: J 0.889 on the 175 corrections).
    motion_change_erode, motion_change, motion_change_weight : int, float, float
        In a correction, the erosion that keeps the flow's smear off the ground
        (``moving_parts_erode``) takes thin moving parts with it (a dog's wagging tail, a
        dancer's leg).  Where the frame's colour changes by more than ``motion_change`` (mean over
        the channels, images in [0, 1]) against every neighbouring frame once the camera's motion
        is undone (:func:`~napari_ivoma.engine.motion.colour_change`: sharp to a pixel; still
        ground does not change, the ground an object uncovers changes against one neighbour
        only), the region moving with the object is eroded by ``motion_change_erode`` px only,
        and its pixels pay ``motion_change_weight`` times the ``moving_parts`` cost (0 = off;
        change channels NaN, not measured: off).  175 recorded DAVIS corrections: J 0.8973 ->
        0.8997 with weight 1 (breakdance 0.848 -> 0.853, car-shadow 0.874 -> 0.881), 0.9031 with
        2 (breakdance 0.863, dog 0.913, car-shadow 0.879: its shadow moves and changes too), 0.904
        / 0.903 with 3 / 4 (car-shadow 0.873 / 0.872), none worse; eroding by 8 px without the
        colour change: 0.8976 (dog 0.903 -> 0.900, the smear); 4 or 11 px with it: 0.8993 /
        0.8989; thresholds 0.02 / 0.05: 0.9000 / 0.8989.  DAVIS 8 rounds, ten seeds: corrected
        frames 0.898 -> 0.902 (weight 1) -> 0.903 (2), AUC 0.845 -> 0.845 -> 0.847.  The same cue
        in round 1 for objects faster than ``motion_slow`` (``motion_object``'s cost) raised
        round-1 J (0.817 -> 0.829 on DAVIS's first frames) and lost end to end (AUC 0.851 ->
        0.822 on seed 0): not used there.
    still_prior_level : float
        In a correction, still pixels are background samples only where their colour is rare in
        the (trusted) prior object: below this share of the uniform density of its colour
        histogram (0 = all still pixels).  A white car on a white, still street front was taken
        for background otherwise (a recorded DAVIS correction 0.84 -> 0.53; with 0.3: 0.79).
    slow_object : float
        In a correction, when the object's strokes move less than this many px (median) to every
        neighbouring frame, a pixel of the prior mask that stands still is no evidence against
        it: the still veto (``motion_veto``) and the still background samples skip the prior's
        pixels (0 = never).  A slowly walking bear's planted foot stands still while its body
        moves 2 px: a background stroke drawn between its legs took the leg beside it (two
        recorded corrections 0.900 -> 0.893 and 0.897 -> 0.898; now 0.909 and 0.936).  175
        recorded DAVIS corrections (seeds 0-4): J 0.8905 -> 0.8910, worse 1 -> 0 (only bear
        corrections change; 3 and 6 px measure the same).
    still_pieces : float
        In a correction, a piece of an active object's prior mask (an 8-connected component) of
        which at least this share of the pixels stands still (below ``motion_static`` px) to every
        neighbouring frame, while the object moves ``slow_object`` px or more to each (its strokes
        on the frame, or the mask's largest piece), is dropped from the prior before the cut,
        unless a new stroke of the object touches it; a detached piece another new stroke
        touches is left to that stroke, specks (under ``far_change_share`` of the object) alone
        (0 = off).  Propagation leaves such pieces on the wall behind a dancer, and the
        benchmark's annotator strokes only the largest error of each label; when even the
        largest piece stands still while the strokes move (the mask followed the street, not
        the car), the correction starts afresh.  Over the 175 recorded DAVIS corrections every
        piece with 90% or more still pixels was background, pieces of the object were at most
        51% still (a dog's hind leg).  175 corrections: J 0.8910 -> 0.8944 (breakdance 0.825
        -> 0.837, car-shadow 0.867 -> 0.872), none worse; detached pieces only: 0.8934; with
        0.6 / 0.95 instead of 0.8 (detached pieces only): 0.8936 / 0.8928.
    distrust_still : bool
        In a correction, while the object's strokes move ``slow_object`` px or more (median) to
        some neighbouring frame, the prior's pixels that stand still (below ``motion_static`` px)
        to every one are not trusted (as near a new stroke, see ``distrust``): no prior cost, no
        object samples, no say in what moves with the object (``moving_parts``), unless a new
        stroke of the object comes within the ``distrust`` zone.  Propagation glues patches of
        wall to a dancer's mask; ``still_pieces`` drops only detached ones.  175 recorded DAVIS
        corrections: J 0.8944 -> 0.8973 (breakdance 0.837 -> 0.848, car-shadow 0.872 -> 0.874,
        dog 0.903 -> 0.903), none worse; with the speed test on every neighbouring frame instead
        of some: 0.8963 (a dancer's strokes can move 8.6 px to one neighbour, 2.5 px to the other).
    n_trees : int
        Trees of the pixel classifier (48 instead of 16: the same mean J, seed-to-seed spread
        0.024 -> 0.017, 3x the time).
    n_samples : int
        Samples per kind (strokes, automatic background, prior, ...) per round (1000 measured
        alike within the seed-to-seed spread, see BENCHMARKS.md).
    memory_weight : float
        Total weight of memory-pool samples relative to this frame's samples.
    memory_samples : int
        At most this many memory-pool samples (a random share) train the model, so a
        correction costs the same after many rounds as after one.
    memory_scale : float
        An object the memory pool has seen but this frame's prior does not hold (a frame
        scribbled without propagating first, an object the propagation lost): its automatic
        background starts at least ``memory_scale * sqrt(area / pi)`` from its strokes, ``area``
        its median area on the confirmed frames, instead of the share-of-the-frame guess
        (``min_start_share``) a stroke alone gets; a click still takes the blob under it
        (0 = off).  DAVIS, the pool holding frame 0's true mask, one skeleton stroke on four
        later frames of each sequence, three CPSM draws (``tools/eval_cpsm.py memory``): J
        without the pool 0.748, with its colours 0.834, with its sizes too 0.841 (car-shadow
        0.773 -> 0.808, the others unchanged; 1.0: 0.837).  The benchmark (its corrections have
        priors): DAVIS seed 0, the sample clips and SIM+ unchanged (SIM+ within 0.001).
    bg_stroke_reach : float
        A first round (no prior) on a colour frame with a background stroke: the automatic
        background starts this many times farther from the strokes (the user's background
        stroke says where the background is; 1 = as without it).  A uniform square, an L-shaped
        stroke over part of it and a background stroke around it: IoU 0.19 -> 0.95.  DAVIS
        frames 0 and T/2 with a skeleton stroke and a background stroke around the object
        (8-30 px out), four CPSM draws (``tools/eval_cpsm.py bgstroke``): J 0.791 -> 0.794
        (car-shadow frame 20 0.725 -> 0.866, bear frame 0 +0.018; blackswan frame 0 0.879 ->
        0.780: its reflection, which the background stroke did not touch).  The benchmark's
        first rounds have no background stroke, so it is unchanged.  Not on grey frames: there
        the reach also bounds each nucleus's local intensity model, and clicks on 12 of 25
        touching discs with a background stroke lost (mean J 0.77 -> 0.40 with 2).
    refine_band : int
        Self-training rounds re-decide only pixels within this distance of the previous
        cut's outline (0 = the whole region of interest).
    fine_mix : float
        In the self-training (and correction) rounds' band, the share of the object probability
        that comes from a second model of the finest-scale colour alone, learned from the cut's
        own pixels ``fine_gap`` to ``fine_gap`` + band px inside and outside its outline (0 =
        off; colour frames).  The multiscale features blur across an outline, so a cut led by
        them alone spills a few pixels onto a plain background beside a textured object: a
        striped object with a zigzag stroke, IoU 0.78-0.86 -> 0.97-0.995; a correction adding the
        missed half of one, 0.93 -> 0.98.  DAVIS, ten seeds: round-1 J 0.820 -> 0.827, corrected
        frames 0.904 -> 0.907, AUC 0.846 -> 0.845 (noise).  Recorded DAVIS round-1 calls, four
        draws each: J 0.816 off, 0.822 at 0.5, 0.819 at 0.7, 0.810 at 1.0.  The same where
        touching objects meet (the first round's appearance split, ``appearance_split``): the
        pixels within ``refine_band`` px of two objects' common border are split again, half of
        each object's share there from a fine model learned from its own pixels ``fine_gap`` to
        ``fine_gap`` + band px from that border.  Zigzags across two touching textured regions:
        labels within 6 px of the border 0.88-0.99 -> 0.99-1.0 (eight images); the natural
        clip's multi-object frames (``tools/eval_cpsm.py natural``), per-object J 0.814 -> 0.861
        at 240x320, 0.940 -> 0.950 at 480x854; DAVIS objects pasted against each other
        (``touching``) 0.763 -> 0.764; those 480x854 first rounds take 0.04 s more (median 0.35 s).
    fine_gap : int
        See ``fine_mix``: pixels this close to the cut's outline (where it may have strayed)
        teach the fine model nothing (3 px: recorded round-1 calls 0.821, the striped object
        0.958-0.989; 5 px: 0.822, 0.973-0.995).
    correction_band : int
        The same in correction rounds, whose first cut already follows the prior mask: the
        band only takes the half-resolution first cut's outline to full resolution. 175
        recorded corrections: J 0.9031 / 0.9032 / 0.9030 with bands of 12 / 6 / 4 px, none worse
        (three CPSM draws each: 0.9009 / 0.9007 / 0.9008, worse 3 / 2 / 2 of 525), 12% less time
        at 4 px; DAVIS ten seeds, 12 / 6 / 4 px: AUC 0.847 / 0.843 / 0.846, corrected frames
        0.903 / 0.901 / 0.904, worse 0 / 2 / 1 of 350 (the seeds' noise).  A round-1 band of
        4 px loses 0.010 J on DAVIS's first frames.
    max_pixels : int
        Larger frames are segmented shrunk to about this many pixels, then refined by a
        full-resolution graph cut in a band around the outline (measured on DAVIS 480p:
        round-1 J 0.707 at full size, 0.683 at 200k, 0.663 at 130k pixels).
    max_pixels_grey : int
        The same for grey frames, where shrinking also denoises (GOWT1 1024x1024:
        per-nucleus J 0.889 at 450k, 0.922 at 130k pixels).
    local_level : float
        Grey frames: per-object intensity threshold at this fraction from the local
        background to the stroke's intensity.
    local_mix : float
        Grey frames: weight of the local-threshold probability against the classifier's.
    faint_contrast : float
        Grey frames: an object whose stroke stands out from its local background by less
        than this many times the background's noise (median absolute deviation) is judged
        by its local threshold on the frame smoothed by ``faint_smooth`` px (working scale)
        instead of 1 px: a dim nucleus among bright ones (GOWT1 frame 1: contrast 0.5
        noise sigma per pixel).  0 = never.
    faint_smooth : float
        See ``faint_contrast``.
    local_trust : bool
        Grey frames with several objects: on the pixels nearest an object's stroke, the
        local threshold's weight is ``1 - m`` (at least ``local_mix``), m = the shared
        classifier's median probability on that stroke: a dim nucleus among bright ones,
        whose stroke the classifier (learned from the bright majority) calls background, is
        judged by its own threshold.  With ``faint_contrast``, on six GOWT1 frames
        (per-object J, mean over frames / mean of each frame's worst object): a short dash
        through each nucleus 0.942 / 0.793 -> 0.947 / 0.895, a click 0.936 / 0.756 -> 0.941 /
        0.882, the benchmark's skeleton strokes 0.9461 / 0.906 -> 0.9454 / 0.903; six SIM+
        frames unchanged.  Generated dim nucleus beside eight bright ones, dashes, six seeds:
        0.5 noise sigma above the background IoU 0.17 -> 0.68, 1 sigma 0.94 either way.
    novel_weight : float
        Colour frames, first round: weight of object samples taken from the pixels within
        ``novel_zone`` start distances of the strokes whose colour is rare in the automatic
        background (parts of an object coloured unlike its stroke, e.g. the red back of a
        silver car; GrabCut's logic: what the background does not explain belongs to the
        object).  DAVIS round-1 J 0.705 -> 0.732 (frames 0/mid), 0.749 -> 0.774 (10/33).
    novel_level : float
        A colour is rare below this fraction of the uniform density of the background's
        smoothed Lab histogram.
    novel_zone : float
        See ``novel_weight``.
    novel_moves : bool
        With the frame's motion, when the strokes move clearly but not together (a dancer's
        limbs), pixels that stay still over every such neighbouring frame are no samples of
        ``novel_weight``: a red hose hanging still beside a breakdancer's raised foot is coloured
        unlike the wall around it and was taken whole with 6 of 10 draws of the samples (round-1
        J 0.55 instead of 0.63).  Objects moving as one are left to ``motion_veto`` (dropping
        their still samples too cost car-shadow 0.853 -> 0.829 over ten draws).  Round 1 over
        ten CPSM draws: breakdance 0.592 +- 0.038 -> 0.606 +- 0.012, the others identical.
    first_cut_pixels : int
        When self-training follows, a first cut over more free pixels than this is made at
        half resolution (the self-training cut re-decides the outline band at full
        resolution; DAVIS: ~30% faster, round-1 J 0.732 -> 0.724 on frames 0/mid,
        0.774 -> 0.777 on 10/33).
    predict_pixels : int
        The first classification of a large region is made on a grid of about this many
        pixels (twice as many in correction rounds) and interpolated.
    new_weight : float
        Correction rounds: extra weight of the samples under the new strokes (DAVIS
        correction J 0.871 -> 0.879 on frames 0/mid, 0.868 -> 0.875 on 10/33).
    local_only : bool
        Correction rounds: changes not connected to a new scribble are undone (the rest of the
        frame stays as it was), except those of ``far_change_share`` or more.  False keeps
        every change (DAVIS corrected frames J 0.827 -> 0.845 with the benchmark's own priors,
        but single-pixel flips everywhere; an earlier engine lost r8 with it).
    far_change_share : float
        Correction rounds: a change not connected to a new scribble is kept when it covers at
        least this share of the re-segmented objects' prior area (the appearance model,
        retrained with the new strokes, fixes the same error elsewhere: a leg, a wing); smaller
        ones are undone.  DAVIS, 3 seeds: corrected frames J 0.827 -> 0.844, AUC 0.796 ->
        0.803, J&F r8 0.849 -> 0.860 (0 = only changes connected to a new stroke).
    appearance_split : float
        A first round on a colour frame: where two or more objects' masks touch, they are split
        by their appearance (a classifier per object against the others, a graph cut per
        object), the shape-based split (the neck between blobs) costing this much to leave (0 =
        the shape alone).  Two touching textured regions, a zigzag stroke across each: labels
        right inside the objects 0.89-0.95 -> 0.985-0.997 (six generated images; with 1.0 / 1.5
        the shape wins more often: 0.972-0.990 / 0.965-0.980).  Every third frame of the
        natural sample clip with two or more objects, one stroke each (``tools/eval_cpsm.py
        natural``): per-object J 0.693 -> 0.764 at 240x320, 0.778 -> 0.915 at 480x854 (0.25:
        0.757 / 0.912, 1.0: 0.788 / 0.912), and with the core of the blob under a click among
        the object's own pixels (not only the click) 0.785 / 0.928; its benchmark: round-1 frame
        J 0.950 -> 0.953, AUC 0.917 -> 0.918.  Only the pieces of the foreground
        holding two objects' strokes are re-split (objects apart cost nothing), and not in
        corrections, where the prior's cores already mark each object (splitting there too:
        the natural clip's AUC 0.917 -> 0.882).  Grey frames keep the shape (touching nuclei
        look alike).
    bg_stroke_level : float
        Correction rounds: prior object pixels detached from the prior object's largest part
        whose colour is common (density above this fraction of uniform) under a new background
        stroke drawn into the prior object give no object samples: a stroke through one leak
        clears a detached leak of its colour elsewhere (0 = off, the default: a correction
        changes the mask where its strokes say so).  Session 7, on all prior object pixels
        (1.0): DAVIS correction J 0.879 -> 0.888, 0.875 -> 0.887; it also took the object samples
        of the body itself, e.g. of a bear's legs in shade when the stroke ran through shaded
        ground.  Session 11, on detached pixels only, with ``distrust_fit``: DAVIS seeds 0-3
        J&F r8 0.878 against 0.883 with it off (dog -0.024: its detached parts coloured like the
        ground lost their samples).
    """

    spacing: float = 4.0
    cp_radius: int = 1
    bg_start: float = 0.35
    click_scale: float = 1.8
    prior_scale: float = 0.5
    click_core: float = 0.5
    min_start: float = 6.0
    min_start_share: float = 0.1
    auto_weight: float = 1.0
    ramp: float = 1.0
    spatial_weight: float = 2.0
    max_reach: float = 3.0
    smooth: float = 2.0
    smooth_correction: float = 6.0
    smooth_radii: tuple[float, float] = (40.0, 80.0)
    prior_weight: float = 0.3
    distrust: float = 0.4
    distrust_fit: float = 1.5
    prior_removal_weight: float = 0.8
    distrust_fit_object: float = 2.0
    prior_firm_weight: float = 2.0
    self_train: int = 1
    n_samples: int = 1500
    memory_weight: float = 0.5
    memory_samples: int = 4000
    n_trees: int = 16
    motion_veto: float = 2.0
    motion_moving: float = 1.5
    motion_static: float = 0.5
    motion_coherence: float = 0.35
    motion_apart: float = 3.0
    motion_apart_share: float = 0.35
    motion_rigid: float = 0.2
    still_near: float = 2.0
    motion_object: float = 1.0
    motion_slow: float = 4.0
    moving_parts: float = 1.0
    moving_parts_erode: int = 14
    motion_change_erode: int = 8
    motion_change: float = 0.033
    motion_change_weight: float = 2.0
    refine_band: int = 12
    correction_band: int = 4
    max_pixels: int = 450_000
    max_pixels_grey: int = 130_000
    local_level: float = 0.5
    local_mix: float = 0.5
    faint_contrast: float = 3.0
    faint_smooth: float = 3.0
    local_trust: bool = True
    novel_weight: float = 1.0
    novel_level: float = 0.05
    novel_zone: float = 1.0
    novel_moves: bool = True
    first_cut_pixels: int = 60_000
    memory_scale: float = 0.7
    bg_stroke_reach: float = 2.0
    predict_pixels: int = 60_000
    new_weight: float = 1.0
    bg_stroke_level: float = 0.0
    still_prior_level: float = 0.3
    slow_object: float = 4.0
    still_pieces: float = 0.8
    distrust_still: bool = True
    local_only: bool = True
    far_change_share: float = 0.005
    appearance_split: float = 0.5
    fine_mix: float = 0.5
    fine_gap: int = 5
    seed: int = 0


# --------------------------------------------------------------------------- helpers


def rasterize_control_points(
    scribbles: list[Scribble], shape: tuple[int, int], spacing: float = 4.0, radius: int = 1
) -> np.ndarray:
    """Paint discs at the control points of ``scribbles`` (drawing order: later wins); a
    painted stroke wider than the discs (``Scribble.width``) is painted whole: every pixel of it
    is a constraint.

    Returns an (H, W) int32 raster with ``NO_LABEL`` where no control point is.
    """
    h, w = shape
    out = np.full((h, w), NO_LABEL, dtype=np.int32)
    offs = disc_offsets(radius)
    for s in scribbles:
        if s.radius > radius:
            paint_scribble(out, s, radius)
            continue
        cp = np.rint(control_points(s, spacing)).astype(np.int64)
        pts = (cp[:, None, :] + offs[None, :, :]).reshape(-1, 2)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)
        out[pts[ok, 0], pts[ok, 1]] = s.object_id
    return out


def _distance_from(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``mask``."""
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


def _blob_radii(light: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Radius of the blob around each (row, col) point: argmax of the scale-normalised LoG.

    A Gaussian pyramid keeps this cheap for large scales; bright and dark blobs both work
    (the stronger sign of the response is used per point).
    """
    h, w = light.shape
    smax = max(2.0, min(h, w) / 8.0)
    img = light.astype(np.float32)
    sig, resp = [], []
    level = 0
    while True:
        f = 2.0**level
        for s in (1.4, 2.0, 2.8):
            if s * f > smax:
                continue
            sm = cv2.GaussianBlur(img, (0, 0), s, borderType=cv2.BORDER_REFLECT)
            lap = cv2.Laplacian(sm, cv2.CV_32F, ksize=1) * (s * s)
            r = np.clip(np.rint(points[:, 0] / f).astype(int), 0, img.shape[0] - 1)
            c = np.clip(np.rint(points[:, 1] / f).astype(int), 0, img.shape[1] - 1)
            sig.append(s * f)
            resp.append(-lap[r, c])
        if 4.0 * f > smax or min(img.shape) < 16:
            break
        img = cv2.pyrDown(img)
        level += 1
    sig = np.array(sig)
    resp = np.array(resp)  # (scales, points)
    flip = np.abs(resp.min(0)) > np.abs(resp.max(0))
    resp[:, flip] *= -1
    best = np.argmax(resp, axis=0)
    radii = sig[best] * np.sqrt(2.0)
    radii[resp[best, np.arange(len(best))] <= 0] = sig[0] * np.sqrt(2.0)
    return radii


def _predict(clf: PixelClassifier, feats: np.ndarray, max_pixels: int = 120_000) -> np.ndarray:
    """Foreground probability of every pixel; large regions are classified on a coarser grid."""
    h, w = feats.shape[:2]
    step = int(np.ceil(np.sqrt(h * w / max_pixels)))
    if step <= 1:
        return clf.predict_proba(feats)
    coarse = clf.predict_proba(np.ascontiguousarray(feats[step // 2 :: step, step // 2 :: step]))
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)


def _sample(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if len(idx) > n:
        idx = rng.choice(idx, n, replace=False)
    return idx


# --------------------------------------------------------------------------- main entry


def _validate(image, scribbles, prior):
    img = _check_image(image)
    h, w = img.shape[:2]
    out = []
    for s in scribbles:
        if not isinstance(s, Scribble):
            raise TypeError(f"scribbles must be Scribble objects, got {type(s).__name__}")
        c = clip_scribble(s, (h, w))
        if c is not None:
            out.append(c)
    if prior is None:
        pr = np.zeros((h, w), np.uint32)
    else:
        pr = np.asarray(prior)
        if pr.shape != (h, w):
            raise ValueError(f"prior mask shape {pr.shape} does not match image shape {(h, w)}")
        if pr.dtype.kind not in "ui" or (pr.dtype.kind == "i" and pr.size and pr.min() < 0):
            raise ValueError(f"prior mask must hold non-negative integer labels, got dtype {pr.dtype}")
        pr = pr.astype(np.uint32)
    return img, out, pr


@dataclass
class PreparedFrame:
    """The work of :func:`scribbles_to_mask` on one frame that does not depend on the strokes
    (made by :func:`prepare_frame`; reusable for every round of scribbles on that frame).

    Attributes
    ----------
    shape : (int, int)
        Shape of the frame.
    scale : float
        The frame is segmented shrunk by this factor (1.0 = at full resolution).
    features : (h, w, F) float32
        :func:`~napari_ivoma.engine.appearance.pixel_features` of the frame at that scale.
    channels : (h, w, C) float32 or None
        :func:`~napari_ivoma.engine.appearance.base_channels` of the frame at that scale
        (None: computed when needed).
    channels_smooth : (h, w, C) float32 or None
        The same smoothed at sigma 0.5 px: the image the graph cut's edges follow.
    colour_codes : (h, w) int16 or None
        :func:`colour_codes` of ``channels`` (None: computed when needed).
    """

    shape: tuple[int, int]
    scale: float
    features: np.ndarray
    channels: np.ndarray | None = None
    channels_smooth: np.ndarray | None = None
    colour_codes: np.ndarray | None = None


def _work_scale(shape: tuple[int, int], channels: int, p: CPSMParams) -> float:
    """Factor by which a frame is shrunk for segmentation (1.0 = full resolution)."""
    scale = float(np.sqrt(shape[0] * shape[1] / (p.max_pixels_grey if channels == 1 else p.max_pixels)))
    return scale if scale > 1.25 else 1.0


def _shrink(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    hs, ws = max(2, int(round(h / scale))), max(2, int(round(w / scale)))
    return cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA).reshape(hs, ws, -1)


def prepare_frame(image: np.ndarray, params: CPSMParams | None = None) -> PreparedFrame:
    """Precompute the stroke-independent part of :func:`scribbles_to_mask` for one frame.

    The pixel features of the whole frame take ~0.1 s at 480p; an interface computes them
    while the user looks at the frame and draws (as SAM-style tools precompute an image
    embedding), and every round of scribbles on that frame reuses them.  The result is the
    same with or without preparing.
    """
    p = params or CPSMParams()
    img = _check_image(image)
    scale = _work_scale(img.shape[:2], img.shape[2], p)
    work = img if scale == 1.0 else _shrink(img, scale)
    channels = base_channels(work)
    return PreparedFrame((img.shape[0], img.shape[1]), scale, pixel_features(work, channels), channels,
                         _smoothed_channels(channels), colour_codes(channels))


def _smoothed_channels(channels: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(channels, (0, 0), 0.5).reshape(channels.shape)


def scribbles_to_mask(
    image: np.ndarray,
    scribbles: list[Scribble],
    prior: np.ndarray | None = None,
    new_ids: set[int] | None = None,
    memory: MemoryPool | None = None,
    params: CPSMParams | None = None,
    motion: np.ndarray | None = None,
    prepared: PreparedFrame | None = None,
) -> np.ndarray:
    """Turn the scribbles of one frame into a multi-object mask.

    Parameters
    ----------
    image : (H, W, C) float32 in [0, 1], C = 1 or 3.
    scribbles : list of Scribble
        All scribbles of the frame in drawing order (later wins where ids cross).
    prior : (H, W) uint32 or None
        Current mask of the frame (propagated or from an earlier round).
    new_ids : set of int or None
        Ids of the scribbles added in this round (None = all).  Objects of ``prior``
        neither named here nor touched by a new scribble keep their pixels exactly
        (except under control points).
    memory : MemoryPool or None
        Confirmed masks of the video; their appearance refines the model.
    params : CPSMParams or None
    motion : (H, W, 4 K) float32 or None
        The frame's own motion (:func:`~napari_ivoma.engine.motion.motion_features`: residual
        dx, dy, speed and colour change to K neighbouring frames); see ``motion_veto``.
    prepared : PreparedFrame or None
        :func:`prepare_frame` of this image with the same ``params`` (computed here when None).

    Returns
    -------
    (H, W) uint32 labels; every control-point pixel carries its scribble's id.
    """
    p = params or CPSMParams()
    img, scribbles, prior = _validate(image, scribbles, prior)
    h, w = img.shape[:2]
    if not scribbles:
        return prior.copy()
    if motion is not None:
        motion = np.asarray(motion, np.float32)
        if motion.ndim != 3 or motion.shape[:2] != (h, w) or motion.shape[2] % MOTION_CHANNELS:
            raise ValueError(f"motion features must be (H, W, {MOTION_CHANNELS}K) for a {h}x{w} frame, "
                             f"got {motion.shape}")
        if p.motion_veto <= 0 or motion.shape[2] == 0:  # (no neighbouring frame: no motion)
            motion = None
    cps = rasterize_control_points(scribbles, (h, w), p.spacing, p.cp_radius)
    scrib_ids = {s.object_id for s in scribbles}
    new = set(scrib_ids) if new_ids is None else {int(i) for i in new_ids} & scrib_ids
    new_raster = rasterize_scribbles([s for s in scribbles if s.object_id in new], (h, w), 1)
    strokes = rasterize_scribbles(scribbles, (h, w), 1)

    active = {i for i in new if i != 0}
    # prior objects touched by a new scribble of another id are re-segmented too
    touched = np.unique(prior[(new_raster >= 0) & (prior != new_raster.astype(np.int64))])
    active |= {int(i) for i in touched if i != 0}

    if motion is not None and p.still_pieces > 0 and active and prior.any():
        # what the prior holds of a moving object that stands still is dropped (a wall patch a dancer's mask took)
        prior = _without_still_pieces(prior, sorted(active), strokes, new_raster, motion, p)
    out = prior.copy()
    if active and p.smooth_correction > 0 and img.shape[2] == 3 and prior.any():
        p = replace(p, smooth=_correction_smoothness(prior, active, p))
    if active:
        fixed = (prior > 0) & ~np.isin(prior, list(active))
        if prepared is None:
            prepared = prepare_frame(img, p)
        elif prepared.shape != (h, w) or prepared.scale != _work_scale((h, w), img.shape[2], p):
            raise ValueError(f"prepared frame of shape {prepared.shape} (scale {prepared.scale:g}) does not fit "
                             f"this {h}x{w} image and these parameters; call prepare_frame(image, params)")
        if prepared.scale > 1.0:
            labels = _segment_coarse(img, scribbles, strokes, prior, fixed, sorted(active), memory, p, new,
                                     prepared, motion)
        else:
            labels = _segment(img, strokes, prior, fixed, sorted(active), memory, p, new_raster >= 0,
                              prepared, motion)[0]
        out[~fixed] = 0
        out[~fixed & (labels > 0)] = labels[~fixed & (labels > 0)]
        if prior.any() and p.local_only:
            far = p.far_change_share * int(np.isin(prior, sorted(active)).sum()) if p.far_change_share > 0 else np.inf
            out = _keep_local_changes(out, prior, new_raster >= 0, far)
    painted = cps >= 0
    out[painted] = cps[painted].astype(np.uint32)
    return out


def _without_still_pieces(prior: np.ndarray, active: list[int], strokes: np.ndarray, new_raster: np.ndarray,
                          motion: np.ndarray, p: CPSMParams) -> np.ndarray:
    """``prior`` without the pieces (8-connected components) of each active object's mask that
    stand still while the object moves (see ``CPSMParams.still_pieces``).

    The object moves when its strokes on this frame (without any, the mask's largest piece)
    move ``slow_object`` px or more (median) to every neighbouring frame; a piece stands still
    when at least ``still_pieces`` of its pixels move less than ``motion_static`` px to every
    one.  A piece a new stroke of the object touches is kept, and so is a detached piece that
    another new stroke touches (it speaks for it); specks (under ``far_change_share`` of the
    object) are left alone.
    """
    out = prior
    for k in active:
        mask = prior == k
        if not mask.any():
            continue
        box = _bounding_box(mask)  # (the pieces' work: in the box of the object's mask)
        lab, sizes, largest = pieces(mask[box])
        stroked = strokes == k
        if stroked.any():
            moves = _median_speeds(motion, stroked)
        else:
            moves = _median_speeds(motion[box], lab == largest)
        if min(moves) < p.slow_object:
            continue
        drop = still_pieces(lab, sizes, _fastest(motion[box]) < p.motion_static, p.still_pieces,
                            p.far_change_share * mask.sum())
        spoken = np.zeros(len(sizes), bool)
        spoken[np.unique(lab[new_raster[box] >= 0])] = True
        spoken[largest] = False  # (the largest piece still: the propagated mask followed something else)
        spoken[np.unique(lab[new_raster[box] == k])] = True
        drop &= ~spoken
        if drop.any():
            out = out.copy() if out is prior else out
            out[box][drop[lab]] = 0
    return out


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Slices of the bounding box of a non-empty ``mask``, grown by ``margin`` px (within the array)."""
    return box_slices(bounding_box(mask, margin))


def _correction_smoothness(prior: np.ndarray, active: set[int], p: CPSMParams) -> float:
    """Smoothness of a correction on a colour frame: ``smooth_correction`` for large objects,
    ``smooth`` for small ones, in between by the objects' mean radius (``smooth_radii``).  The
    smoothness term grows with an object's outline and the data term with its area, so a weight
    that cleans a large object's outline erodes a small object's thin parts."""
    areas = [int(np.count_nonzero(prior == k)) for k in active]
    areas = [a for a in areas if a] or [0]
    radius = float(np.sqrt(np.mean(areas) / np.pi))
    lo, hi = p.smooth_radii
    share = float(np.clip((radius - lo) / max(hi - lo, 1e-6), 0.0, 1.0))
    return p.smooth + share * (p.smooth_correction - p.smooth)


def _segment_coarse(
    img: np.ndarray,
    scribbles: list[Scribble],
    strokes: np.ndarray,
    prior: np.ndarray,
    fixed: np.ndarray,
    active: list[int],
    memory: MemoryPool | None,
    p: CPSMParams,
    new: set[int],
    prepared: PreparedFrame,
    motion: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`_segment` on a frame shrunk by ``scale``, then a full-resolution graph cut in a
    band around the upsampled outline (the band's unary terms are the upsampled coarse ones)."""
    h, w = img.shape[:2]
    scale = prepared.scale
    small = _shrink(img, scale)
    hs, ws = small.shape[:2]
    sy, sx = hs / h, ws / w
    f = np.array([sy, sx])
    sscr = [Scribble(s.object_id, (s.points + 0.5) * f - 0.5, s.width * float(f.mean())) for s in scribbles]
    sstrokes = rasterize_scribbles(sscr, (hs, ws), 1)
    snew = rasterize_scribbles([s for s in sscr if s.object_id in new], (hs, ws), 1) >= 0
    sprior = cv2.resize(prior, (ws, hs), interpolation=cv2.INTER_NEAREST)
    sfixed = cv2.resize(fixed.astype(np.uint8), (ws, hs), interpolation=cv2.INTER_NEAREST) > 0
    sp = replace(p, min_start=p.min_start / scale)
    smotion = None
    if motion is not None:  # magnitudes are in full-resolution pixels either way
        c = MOTION_CHANNELS
        smotion = np.concatenate([cv2.resize(np.ascontiguousarray(motion[..., k:k + c]), (ws, hs),
                                             interpolation=cv2.INTER_AREA).reshape(hs, ws, -1)
                                  for k in range(0, motion.shape[2], c)], axis=2)
    lab_s, uf_s, ub_s = _segment(small, sstrokes, sprior, sfixed, active, memory, sp, snew, prepared,
                                 smotion)
    lab = cv2.resize(lab_s, (w, h), interpolation=cv2.INTER_NEAREST)
    fg = lab > 0
    if not fg.any():
        return lab
    band = _band(fg, int(np.ceil(scale)) + 1)
    u_fg = cv2.resize(uf_s, (w, h), interpolation=cv2.INTER_LINEAR)
    u_bg = cv2.resize(ub_s, (w, h), interpolation=cv2.INTER_LINEAR)
    u_fg[~band & ~fg] = _HARD
    u_bg[~band & fg] = _HARD
    hard_fg = np.isin(strokes, active)
    hard_bg = fixed | (strokes == 0) | (strokes > 0) & ~hard_fg
    u_fg[hard_bg] = _HARD
    u_bg[hard_fg] = _HARD
    free = band & ~hard_fg & ~hard_bg
    fg2 = ~free & (u_fg < u_bg)  # (what the cut keeps outside the free pixels)
    if free.any():
        # the cut's window (the box of its free pixels, + 1) and the 2 px the blur reaches: a
        # 4K frame's colours are converted and blurred there only, with the same values
        win = _bounding_box(free, 4)
        if img.shape[2] == 1:  # (grey channels are stretched by the whole frame's percentiles)
            base = cv2.GaussianBlur(base_channels(img), (0, 0), 0.5).reshape(h, w, -1)[win]
        else:
            base = cv2.GaussianBlur(base_channels(img[win]), (0, 0), 0.5).reshape(u_fg[win].shape + (-1,))
        fg2[win] = cut(u_fg[win], u_bg[win], base, p.smooth, free[win])
    ids = [int(k) for k in np.unique(lab_s) if k]  # (the upsampled labels hold the same ids)
    if len(ids) == 1:
        out = np.where(fg2, ids[0], 0).astype(np.uint32)
    else:  # band pixels take the label of the nearest coarse object pixel (all in the box of fg and band)
        core = fg & ~band
        if not core.any():
            core = fg
        box = _bounding_box(fg | band)
        _, idx = ndi.distance_transform_edt(~core[box], return_indices=True)
        out = np.zeros((h, w), np.uint32)
        out[box] = np.where(fg2[box], lab[box][idx[0], idx[1]], 0)
    out[hard_fg] = strokes[hard_fg].astype(np.uint32)
    return out


def _reach_of_stroke(stroke: np.ndarray, outside: np.ndarray, fit: float, least: float, most: float) -> np.ndarray:
    """Pixels within reach of a stroke drawn into a region: each stroke pixel reaches ``fit``
    times its distance to ``outside`` (the region's outside), within ``[least, most]``; a pixel
    is measured from its nearest stroke pixel."""
    out = np.zeros(stroke.shape, bool)
    if not stroke.any():
        return out
    reach = np.clip(fit * _distance_from(outside), least, most)
    # nothing beyond ``most`` of the stroke is reached: the exact transform runs on that box only
    box = _bounding_box(stroke, int(np.ceil(most)) + 1 if np.isfinite(most) else max(stroke.shape))
    dist, (ir, ic) = ndi.distance_transform_edt(~stroke[box], return_indices=True)
    out[box] = dist < reach[box][ir, ic]
    return out


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (the first one on ties); empty stays empty."""
    mask = np.asarray(mask, dtype=bool)
    lab, n = ndi.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask.copy()
    return lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1


def _distrusted_prior(prior_fg: np.ndarray, new_fg: np.ndarray, new_bg: np.ndarray, zone: float,
                      fit: float = 0.0, least: float = 0.0, fit_object: float = 0.0) -> np.ndarray:
    """Pixels of a correction round where the prior mask is not trusted.

    A new background stroke says the object pixels near it (within ``zone``) may be wrong, a
    new object stroke says the background pixels near it may be; neither says more (the
    object pixels next to a stroke that adds a missed part stay trusted).  With ``fit`` > 0 a
    background stroke reaches only ``fit`` times each of its pixels' distance to the prior's
    outline (at least ``least``, at most ``zone``): drawn through the middle of a wrongly taken
    strip, it speaks for the strip, not for the object parts beside it.  ``fit_object`` > 0
    does the same for an object stroke drawn outside the prior object (its reach measured
    from the prior object).

    Parameters
    ----------
    prior_fg : (H, W) bool
        Pixels of the re-segmented objects in the prior mask.
    new_fg, new_bg : (H, W) bool
        Pixels of this round's object strokes and background strokes.
    zone : float
        Reach of a stroke, in pixels.
    fit, least, fit_object : float
        See above (``fit`` 0: every background stroke reaches ``zone``; ``fit_object`` 0: every
        object stroke).
    """
    in_doubt = _reach_of_stroke(new_bg, ~prior_fg, fit, least, zone) if fit > 0 else _distance_from(new_bg) < zone
    if fit_object > 0:
        return np.where(prior_fg, in_doubt, _reach_of_stroke(new_fg, prior_fg, fit_object, least, zone))
    return np.where(prior_fg, in_doubt, _distance_from(new_fg) < zone)


def _keep_local_changes(out: np.ndarray, prior: np.ndarray, new_mask: np.ndarray,
                        min_area: float = np.inf) -> np.ndarray:
    """Undo changed regions that are not connected to a new scribble, unless they have at
    least ``min_area`` pixels."""
    changed = out != prior
    if not changed.any():
        return out
    box = _bounding_box(changed)  # (the changes' work: in their box)
    changed = changed[box]
    lab, n = ndi.label(changed, structure=np.ones((3, 3)))
    near = (cv2.dilate(new_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)[box]
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[near & changed])] = True
    if np.isfinite(min_area):
        keep |= np.bincount(lab.ravel(), minlength=n + 1) >= max(min_area, 1.0)
    keep[0] = False
    revert = changed & ~keep[lab]
    out = out.copy()
    out[box][revert] = prior[box][revert]
    return out


def _coarse_cut(
    u_fg: np.ndarray,
    u_bg: np.ndarray,
    image: np.ndarray,
    smooth: float,
    free: np.ndarray,
    hard_fg: np.ndarray,
    hard_bg: np.ndarray,
) -> np.ndarray:
    """:func:`cut` at half resolution (unary terms averaged over 2x2 blocks, smoothness
    halved so that boundary and area costs keep their full-resolution balance), upsampled."""
    h, w = u_fg.shape
    hs, ws = (h + 1) // 2, (w + 1) // 2

    def down(a, interp=cv2.INTER_AREA):
        return cv2.resize(a, (ws, hs), interpolation=interp)

    uf = down(np.minimum(u_fg, 50.0).astype(np.float32))
    ub = down(np.minimum(u_bg, 50.0).astype(np.float32))
    hf = down(hard_fg.astype(np.uint8), cv2.INTER_NEAREST) > 0
    hb = down(hard_bg.astype(np.uint8), cv2.INTER_NEAREST) > 0
    hb &= ~hf
    uf[hb], ub[hf] = _HARD, _HARD
    img = down(image).reshape(hs, ws, -1)
    small = cut(uf, ub, img, 0.5 * smooth, ~hf & ~hb)
    fg = cv2.resize(small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    fg |= hard_fg
    fg &= ~hard_bg
    return fg


_COLOUR_BINS = np.array([8, 16, 16])  # L, a, b


def colour_codes(lab: np.ndarray) -> np.ndarray:
    """Per pixel, the bin of its colour (Lab channels of
    :func:`~napari_ivoma.engine.appearance.base_channels`, smoothed at sigma 1.5 px) in an
    8 x 16 x 16 histogram, as (H, W) int16 codes for :func:`_unseen_colours` (a grey frame's
    one channel is binned on all three axes)."""
    sm = cv2.GaussianBlur(lab, (0, 0), 1.5).reshape(lab.shape)
    lo = np.array([0.0, -0.8, -0.8])
    hi = np.array([1.0, 0.8, 0.8])
    q = np.clip(((sm - lo) / (hi - lo) * _COLOUR_BINS).astype(np.int64), 0, _COLOUR_BINS - 1)
    return ((q[..., 0] * _COLOUR_BINS[1] + q[..., 1]) * _COLOUR_BINS[2] + q[..., 2]).astype(np.int16)


def _unseen_colours(codes: np.ndarray, background: np.ndarray, level: float,
                    where: np.ndarray | None = None) -> np.ndarray:
    """Pixels (of ``where``, default all) whose colour (:func:`colour_codes`) is rare in
    ``background``: smoothed histogram density below ``level`` times the uniform density."""
    n_bins = int(_COLOUR_BINS.prod())
    hist = np.bincount(codes[background], minlength=n_bins).astype(np.float32).reshape(tuple(_COLOUR_BINS))
    hist = ndi.uniform_filter(hist, 3, mode="constant")
    total = max(float(hist.sum()), 1.0)
    where = np.ones(codes.shape, bool) if where is None else where
    out = np.zeros(codes.shape, bool)
    out[where] = hist.ravel()[codes[where]] / total * n_bins < level
    return out


def _object_scales(
    light: np.ndarray, strokes: np.ndarray, prior: np.ndarray, ids: list[int], p: CPSMParams,
    colour: bool = False, known: dict[int, float] | None = None,
) -> tuple[dict[int, float], dict[int, float]]:
    """Per object: distance (pixels) from its strokes/prior where automatic background
    starts, and for click-only objects the radius of the blob under the click.  ``known``:
    areas (working pixels) the memory pool holds for objects this frame's prior lacks; a first
    round with a background stroke reaches ``bg_stroke_reach`` times farther (colour frames)."""
    starts: dict[int, float] = {}
    centres: dict[int, np.ndarray] = {}
    exts: dict[int, float] = {}
    sized: set[int] = set()  # objects whose prior mask tells their size
    remembered: set[int] = set()  # objects without a prior whose size the memory pool tells
    for k in ids:
        cand = [p.min_start]
        ys, xs = np.nonzero(strokes == k)
        if len(ys):
            exts[k] = float(np.hypot(np.ptp(ys), np.ptp(xs)))
            cand.append(p.bg_start * exts[k])
            mid = len(ys) // 2
            centres[k] = np.array([ys[mid], xs[mid]], float)
        area = int((prior == k).sum())
        if area:
            cand.append(p.prior_scale * np.sqrt(area / np.pi))
            sized.add(k)
        elif known and k in known:  # no prior here: the size it had on confirmed frames
            cand.append(p.memory_scale * np.sqrt(known[k] / np.pi))
            remembered.add(k)
        starts[k] = float(max(cand))
    radii: dict[int, float] = {}
    keys = [k for k in centres if k not in sized]  # (a prior mask tells the size better than a blob)
    if keys:
        rs = _blob_radii(light, np.array([centres[k] for k in keys]))
        for k, r in zip(keys, rs):
            # clicks and short strokes on a blob: the blob's scale tells the object's extent
            if exts[k] < 2.0 * float(r):
                radii[k] = float(r)
                starts[k] = max(starts[k], p.click_scale * float(r))
    guess = p.min_start_share * min(light.shape) if colour else 0.0
    for k in exts.keys() - radii.keys() - sized - remembered:  # a stroke, nothing else, tells the size
        starts[k] = max(starts[k], guess)
    if colour and p.bg_stroke_reach != 1.0 and not prior.any() and (strokes == 0).any():
        # a first round with a background stroke: the user says where the background is
        starts = {k: v * p.bg_stroke_reach for k, v in starts.items()}
    return starts, radii


def _segment(
    img: np.ndarray,
    strokes: np.ndarray,
    prior: np.ndarray,
    fixed: np.ndarray,
    active: list[int],
    memory: MemoryPool | None,
    p: CPSMParams,
    new_mask: np.ndarray,
    prepared: PreparedFrame,
    motion: np.ndarray | None = None,
) -> np.ndarray:
    """Labels of the active objects (0 elsewhere) for one frame (``img``: the frame at the
    ``prepared`` frame's working scale)."""
    h, w = img.shape[:2]
    rng = np.random.default_rng(p.seed)
    base = base_channels(img) if prepared.channels is None else prepared.channels
    smooth = _smoothed_channels(base) if prepared.channels_smooth is None else prepared.channels_smooth
    features = prepared.features
    light = np.ascontiguousarray(base[..., 0])
    prior_fg = np.isin(prior, active)
    user_bg = strokes == 0
    obj_strokes = np.isin(strokes, active)
    known = {}  # objects the memory pool has seen: their area there, in working pixels
    if memory is not None and p.memory_scale > 0 and len(memory):
        for k in active:
            a = memory.object_area(k)
            if a:
                known[k] = a / prepared.scale**2
    starts, click_radii = _object_scales(light, strokes, prior, active, p, colour=img.shape[2] == 3,
                                         known=known)
    # objects touching in a first round on a colour frame are split by their appearance
    split = img.shape[2] == 3 and p.appearance_split > 0 and len(active) > 1 and not prior.any()
    # positive evidence: the strokes, and for clicks the core of the blob under the click
    pos_full = obj_strokes.copy()
    # (for the split: each object's id on its strokes and its click's core, 0 elsewhere)
    cores = np.where(obj_strokes, strokes, 0) if split else None
    for k, r in click_radii.items():
        rad = max(2, int(round(p.click_core * r)))
        disc = cv2.dilate((strokes == k).astype(np.uint8), _disc(rad))
        core = (disc > 0) & ~fixed & ~user_bg & (strokes < 0)
        pos_full |= core
        if split:
            cores[core & (cores == 0)] = k

    # soft spatial prior: penalty for foreground beyond each object's start distance
    pen = np.full((h, w), np.inf, np.float32)
    for k in active:
        ref = (strokes == k) | ((prior == k) & (strokes < 0))
        if not ref.any():
            continue
        d = _distance_from(ref) / starts[k]
        pen = np.minimum(pen, d)
    allowed = (pen < p.max_reach) & ~fixed & ~user_bg
    if not allowed.any():
        return np.zeros((h, w), np.uint32), np.full((h, w), _HARD, np.float32), np.zeros((h, w), np.float32)
    far = (pen > 1.0) & ~fixed & ~pos_full & ~prior_fg
    spatial = p.spatial_weight * np.maximum(pen - 1.0, 0.0)

    # region of interest: bounding box of the allowed region plus a margin
    roi = _bounding_box(allowed, 8)
    feats = features[roi]
    nf = feats.shape[-1]
    wc = feats.shape[1]  # samples are gathered from the view (reshaping it would copy the region)

    def crop(a):
        return a[roi]

    codes = prepared.colour_codes  # each pixel's colour bin, for the unseen-colour tests

    def crop_codes() -> np.ndarray:  # (computed once, and only when a test needs them)
        nonlocal codes
        if codes is None:
            codes = colour_codes(base)
        return crop(codes)

    pos_mask = crop(pos_full)
    neg_user = crop(user_bg)
    far_c = crop(far)
    pen_c = crop(pen)
    ring = far_c & (pen_c < 2.0)
    surroundings = far_c & (pen_c < p.max_reach)  # the automatic background around the objects
    novel = None  # first round: object samples of colours the surroundings lack ...
    moving = None  # ... and a cost for what moves with the object while its surroundings stay still
    use_novel = p.novel_weight > 0 and img.shape[2] == 3
    use_motion = motion is not None and p.motion_object > 0
    if (use_novel or use_motion) and not prior.any():
        # free pixels near the strokes
        zone = (pen_c < p.novel_zone) & ~pos_mask & ~crop(user_bg | fixed) & crop(allowed)
        if use_novel:
            novel = _unseen_colours(crop_codes(), surroundings, p.novel_level, where=zone)
            if motion is not None and p.novel_moves:
                still_novel = _still_while_strokes_move_apart(motion[roi], crop(obj_strokes), p)
                if still_novel is not None:
                    novel &= ~still_novel
        if use_motion:
            moving = _pixels_moving_with(motion[roi], crop(obj_strokes), surroundings, p, p.motion_slow)
            if moving is not None:
                moving = _eroded(moving, 6) & zone
    prior_c = crop(prior_fg)
    # the prior is not trusted near the new scribbles: they say it is wrong there
    distrust = np.zeros(prior_c.shape, bool)
    new_c = crop(new_mask)
    # prior object pixels coloured like a new background stroke drawn into the prior object:
    # the stroke says such pixels are wrong, so they are no object samples
    unlike_prior = np.zeros(prior_c.shape, bool)
    new_bg_strokes = new_c & neg_user
    new_bg = new_bg_strokes & prior_c
    if p.bg_stroke_level > 0 and new_bg.sum() >= 10:
        detached = prior_c & ~largest_region(prior_c)  # (not the body: a leg coloured like the ground)
        if detached.any():
            unlike_prior = detached & ~_unseen_colours(crop_codes(), new_bg, p.bg_stroke_level, where=detached)
    zone = max(p.min_start, p.distrust * np.sqrt(max(int(prior_fg.sum()), 1) / np.pi))
    if prior.any() and new_mask.any():
        distrust = crop(_distrusted_prior(prior_fg, new_mask & (strokes > 0), new_mask & (strokes == 0), zone,
                                          p.distrust_fit, p.min_start, p.distrust_fit_object))
    # a correction: within the zone of this round's object strokes (their whole reach, unfitted)
    new_obj = new_c & crop(obj_strokes)
    near_new_obj = _distance_from(new_obj) < zone if prior.any() and new_obj.any() else None
    # the object's strokes move under ``slow_object`` px to every neighbouring frame
    slow = motion is not None and _moves_slowly(motion[roi], crop(obj_strokes), p.slow_object)
    if p.distrust_still and motion is not None and prior_c.any() and obj_strokes.any() and not slow:
        # what the prior holds of a moving object that stands still (a patch of wall) speaks for
        # nothing, unless a new stroke of the object comes near
        still_prior = prior_c & (_fastest(motion[roi]) < p.motion_static)
        if near_new_obj is not None:
            still_prior &= ~near_new_obj
        distrust = distrust | still_prior
    if motion is not None and p.moving_parts > 0 and prior.any():
        # a correction: parts moving with the object where the prior is trusted are likely missed parts
        flowing = _pixels_moving_with(motion[roi], crop(obj_strokes) | (prior_c & ~distrust), surroundings, p, np.inf)
        if flowing is not None:
            # the cost's weight per pixel: 1 where it moves with the object, more where its colour changes too
            weight = _eroded(flowing, p.moving_parts_erode).astype(np.float32)
            if p.motion_change > 0:  # (thin parts, a tail or a leg, which the erosion removes)
                weight[_eroded(flowing, p.motion_change_erode) & _changing(motion[roi], p)] = p.motion_change_weight
            # a moving region a new background stroke reaches is the stroke's (a reflection)
            keep = _regions_not_reached((weight > 0) & ~prior_c & crop(allowed), new_bg_strokes,
                                        p.moving_parts_erode + 2) & ~distrust
            moving = np.where(keep, weight, 0.0).astype(np.float32)

    still = None if motion is None else _still_pixels(motion[roi], crop(obj_strokes), p)
    if motion is not None and p.motion_apart > 0:
        # the object's own motion: its strokes and, in a correction, its trusted prior mask
        apart = _pixels_moving_apart(motion[roi], crop(obj_strokes) | (prior_c & ~distrust), p)
        if apart is not None:  # a pixel still or moving otherwise: vetoed alike
            apart[prior_c] = 0.0  # (never what the prior calls the object: a part may move apart)
            still = apart if still is None else np.maximum(still, apart)
    if still is not None and p.slow_object > 0 and prior_c.any() and slow:
        still = np.where(prior_c, 0.0, still).astype(np.float32)  # a slow walker's planted foot stands still
    still_bg = None  # the object moves, these pixels do not: background samples
    if still is not None:
        still_bg = (still >= 1.0) & ~pos_mask & crop(allowed)
        if p.still_prior_level > 0 and prior_c.any() and still_bg.any():
            # a correction: not of colours the confirmed object itself is made of
            still_bg &= _unseen_colours(crop_codes(), prior_c & ~distrust, p.still_prior_level, where=still_bg)
    # half of them next to the object, where they inform the cut (see ``still_near``)
    still_bg_near = still_bg & (pen_c < p.still_near) if still_bg is not None and p.still_near > 0 else None

    mem_x, mem_y = memory.samples() if memory is not None and len(memory) else (None, None)

    # training samples (indices into the ROI) and weights
    def samples(pos_extra: np.ndarray | None, neg_extra: np.ndarray | None):
        xs, ys, ws = [], [], []

        def add(mask, label, n, weight, per_pixel=None):
            idx = _sample(mask, n, rng)
            if len(idx):
                xs.append(feats[idx // wc, idx % wc])
                ys.append(np.full(len(idx), label, np.float32))
                wi = np.full(len(idx), 1.0, np.float32) if per_pixel is None else per_pixel.ravel()[idx]
                ws.append(weight * wi / max(float(wi.sum()), 1e-6))

        add(pos_mask, 1, p.n_samples, 1.0)
        if novel is not None and pos_extra is None:
            add(novel, 1, p.n_samples, p.novel_weight)
        add(neg_user, 0, p.n_samples, 1.0)
        if p.new_weight > 0 and prior_c.any():
            # the new strokes are the user's latest word: their pixels count extra
            add(new_c & pos_mask, 1, p.n_samples, p.new_weight)
            add(new_c & neg_user, 0, p.n_samples, p.new_weight)
        # automatic background: trusted more the farther it is from the objects
        auto_w = p.auto_weight * (0.3 if user_bg.any() else 1.0) * (0.3 if mem_pos else 1.0)
        ramp = np.clip((pen_c - 1.0) / p.ramp, 0.05, 1.0)
        add(ring, 0, p.n_samples // 2, 0.6 * auto_w, ramp)
        add(far_c & ~ring, 0, p.n_samples // 2, 0.4 * auto_w, ramp)
        if prior_c.any():
            inner = cv2.erode(prior_c.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            add(inner & ~distrust & ~unlike_prior, 1, p.n_samples, 0.7)
            near_bg = ~prior_c & ~far_c & (pen_c < 1.0) & ~crop(fixed) & ~pos_mask
            add(near_bg, 0, p.n_samples // 2, 0.5)
        if still_bg_near is not None:
            add(still_bg_near, 0, p.n_samples // 2, 0.5)
            add(still_bg, 0, p.n_samples // 2, 0.5)
        elif still_bg is not None:
            add(still_bg, 0, p.n_samples, 1.0)
        if pos_extra is not None:
            add(pos_extra, 1, p.n_samples, 1.0)
        if neg_extra is not None:
            add(neg_extra, 0, p.n_samples, 1.0)
        if mem_x is not None:
            mx, my = mem_x, mem_y
            if len(my) > p.memory_samples:  # a bounded random share: the cost stays flat over rounds
                keep = np.sort(rng.choice(len(my), p.memory_samples, replace=False))
                mx, my = mx[keep], my[keep]
            if mx.size and mx.shape[1] == nf:
                pos = np.isin(my, active)
                neg = my == 0
                for sel, lab in ((pos, 1), (neg, 0)):
                    if sel.any():
                        xs.append(mx[sel])
                        ys.append(np.full(int(sel.sum()), lab, np.float32))
                        ws.append(np.full(int(sel.sum()), p.memory_weight / sel.sum(), np.float32))
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)

    base_roi = np.ascontiguousarray(smooth[roi])
    hard_bg = ~crop(allowed)
    hard_fg = crop(obj_strokes)
    prior_cost_fg = np.zeros(pos_mask.shape, np.float32)
    prior_cost_bg = np.zeros(pos_mask.shape, np.float32)
    if prior.any():
        prior_cost_fg[~prior_c & ~distrust] = p.prior_weight
        if p.distrust_fit_object > 0 and p.prior_firm_weight > 0 and near_new_obj is not None:
            # near a new object stroke but beyond its fitted reach, the prior's background holds
            prior_cost_fg[near_new_obj & ~prior_c & ~distrust] = p.prior_firm_weight
        prior_cost_bg[prior_c & ~distrust] = p.prior_removal_weight

    local = nearest = None
    if img.shape[2] == 1 and p.local_mix > 0:
        found = _local_intensity_prob(crop(light), crop(strokes), active, starts, p.local_level,
                                      p.faint_contrast, p.faint_smooth)
        if found is not None:
            local, nearest = found
    local_weight = p.local_mix  # (per pixel when the classifier does not recognise some object)
    fg = None
    mem_pos = memory is not None and bool(memory.object_ids() & set(active))
    if mem_pos:
        spatial = spatial * 0.5
    u_fg = np.where(hard_bg, _HARD, 1.0).astype(np.float32)
    u_bg = np.where(hard_bg, 0.0, 0.0).astype(np.float32)
    for it in range(1 + max(0, p.self_train)):
        if fg is None:
            x, y, wt = samples(None, None)
        else:
            inner = cv2.erode(fg.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            outer = ~(cv2.dilate(fg.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~hard_bg
            x, y, wt = samples(inner, outer)
        if y.min() == y.max():
            # no background evidence at all (object covers everything allowed)
            fg = ~hard_bg
            break
        clf = PixelClassifier(n_trees=p.n_trees, seed=p.seed).fit(x, y, wt)
        free = ~(hard_bg | hard_fg)
        band_px = p.correction_band if prior.any() else p.refine_band
        if fg is None or band_px <= 0:
            # correction rounds fix details: their first pass is classified on a finer grid
            prob = _predict(clf, feats, p.predict_pixels * (2 if prior.any() else 1))
        else:
            # self-training only moves the outline: re-decide a band around the first cut
            band = _band(fg, band_px)
            prob = np.where(fg, 1.0, 0.0).astype(np.float32)
            prob[band] = clf.predict_proba(feats[band])
            if p.fine_mix > 0 and nf > 1:
                fine = _fine_outline_prob(fg, band, feats, band_px, p, rng)
                if fine is not None:
                    prob[band] = (1.0 - p.fine_mix) * prob[band] + p.fine_mix * fine
            free &= band
        if local is not None:
            if it == 0 and p.local_trust and len(active) > 1:
                # the less the classifier recognises an object's own stroke, the more its
                # local threshold decides the pixels nearest that stroke
                strokes_c = crop(strokes)
                weight = np.full(len(active), p.local_mix, np.float32)
                for i, k in enumerate(active):
                    if (strokes_c == k).any():
                        weight[i] = max(p.local_mix, 1.0 - float(np.median(prob[strokes_c == k])))
                local_weight = weight[nearest]
            prob = ((1.0 - local_weight) * prob + local_weight * local).astype(np.float32)
        eps = 1e-4
        u_fg = -np.log(prob + eps) + crop(spatial) + prior_cost_fg
        if still is not None:
            u_fg = u_fg + p.motion_veto * still
        u_bg = -np.log(1.0 - prob + eps) + prior_cost_bg
        if moving is not None:
            u_bg = u_bg + (p.moving_parts if prior.any() else p.motion_object) * moving
        u_fg[hard_bg] = _HARD
        u_bg[hard_fg] = _HARD
        if fg is None and p.first_cut_pixels and free.sum() > p.first_cut_pixels and p.self_train:
            fg = _coarse_cut(u_fg, u_bg, base_roi, p.smooth, free, hard_fg, hard_bg)
        else:
            fg = cut(u_fg, u_bg, base_roi, p.smooth, free)
        if it == 0 and p.self_train and not fg.any():
            break

    labels_roi = _assign(fg, crop(strokes), crop(prior), active)
    if split:
        labels_roi = _split_by_appearance(labels_roi, crop(cores), active, feats, base_roi, p, rng)
    out = np.zeros((h, w), np.uint32)
    out[roi] = labels_roi
    uf = np.full((h, w), _HARD, np.float32)
    ub = np.zeros((h, w), np.float32)
    uf[roi], ub[roi] = u_fg, u_bg
    return out, uf, ub


def _fine_outline_prob(fg: np.ndarray, band: np.ndarray, feats: np.ndarray, band_px: int, p: CPSMParams,
                       rng: np.random.Generator) -> np.ndarray | None:
    """Object probability of the ``band`` pixels from their fine-scale colour alone, learned
    from the pixels just inside and just outside the cut ``fg`` (beyond ``fine_gap`` px of its
    outline, where the cut may have strayed): the multiscale features blur across an outline,
    so a cut led by them spills a few pixels onto a plain background next to a textured object."""
    d_in = _distance_from(~fg)
    d_out = _distance_from(fg)
    reach = p.fine_gap + band_px
    inner = fg & (d_in >= p.fine_gap) & (d_in < reach)
    outer = ~fg & (d_out >= p.fine_gap) & (d_out < reach)
    wc = feats.shape[1]
    idx_in, idx_out = _sample(inner, p.n_samples, rng), _sample(outer, p.n_samples, rng)
    if len(idx_in) < 20 or len(idx_out) < 20:
        return None
    fine = feats[..., FINEST_COLOUR]
    x = np.concatenate([fine[idx_in // wc, idx_in % wc], fine[idx_out // wc, idx_out % wc]])
    y = np.concatenate([np.ones(len(idx_in), np.float32), np.zeros(len(idx_out), np.float32)])
    clf = PixelClassifier(n_trees=p.n_trees, seed=p.seed).fit(x, y)
    return clf.predict_proba(fine[band])


def _n_neighbours(motion: np.ndarray) -> int:
    """Neighbouring frames the motion features describe (see ``motion_features``)."""
    return motion.shape[2] // MOTION_CHANNELS


def _vectors(motion: np.ndarray, k: int) -> np.ndarray:
    """Residual motion vectors (dx, dy) to neighbouring frame ``k``."""
    return motion[..., MOTION_CHANNELS * k:MOTION_CHANNELS * k + 2]


def _speed(motion: np.ndarray, k: int) -> np.ndarray:
    """Residual speed (px) to neighbouring frame ``k``."""
    return motion[..., MOTION_CHANNELS * k + 2]


def _change(motion: np.ndarray, k: int) -> np.ndarray:
    """Colour change against neighbouring frame ``k``, the camera's motion undone (NaN: not measured)."""
    return motion[..., MOTION_CHANNELS * k + 3]


def _fastest(motion: np.ndarray) -> np.ndarray:
    """Largest residual speed over the neighbouring frames, (...)."""
    # (an element-wise chain: ~20x faster than a reduction over the interleaved channel axis)
    return functools.reduce(np.maximum, [_speed(motion, k) for k in range(_n_neighbours(motion))])


def _least_change(motion: np.ndarray) -> np.ndarray:
    """Smallest colour change (camera's motion undone) over the neighbouring frames, (...)
    (NaN: not measured)."""
    return functools.reduce(np.minimum, [_change(motion, k) for k in range(_n_neighbours(motion))])


def _moving_neighbours(motion: np.ndarray, region: np.ndarray, p: CPSMParams) -> Iterator[tuple[int, np.ndarray]]:
    """The neighbouring frames over which the ``region``'s pixels clearly move (10th percentile of
    their residual motion above ``motion_moving``): yields (k, the region's (N, 2) vectors).

    The gate both motion vetoes share: a still object tells nothing by its motion."""
    for k in range(_n_neighbours(motion)):
        if np.percentile(_speed(motion, k)[region], 10) > p.motion_moving:
            yield k, _vectors(motion, k)[region]


def _still_pixels(motion: np.ndarray, strokes: np.ndarray, p: CPSMParams) -> np.ndarray | None:
    """Share (0..1) of the neighbouring frames over which a pixel stays still while every
    stroke moves (see ``CPSMParams.motion_veto``); None when no stroke moves clearly."""
    if not strokes.any():
        return None
    # the strokes move together (a car, not a dancer's limbs)
    moving = [k for k, vec in _moving_neighbours(motion, strokes, p) if _move_together(vec, p)]
    if not moving:
        return None
    still = np.zeros(strokes.shape, np.float32)
    for k in moving:
        still += _speed(motion, k) < p.motion_static
    return still / len(moving)


def _median_speeds(motion: np.ndarray, region: np.ndarray) -> list[float]:
    """The ``region`` pixels' median residual motion (px) to each neighbouring frame."""
    return [float(np.median(_speed(motion, k)[region])) for k in range(_n_neighbours(motion))]


def _moves_slowly(motion: np.ndarray, strokes: np.ndarray, speed: float) -> bool:
    """Whether the ``strokes`` pixels' median motion stays below ``speed`` px to every neighbouring
    frame (see ``CPSMParams.slow_object``)."""
    return bool(strokes.any()) and max(_median_speeds(motion, strokes)) < speed


def _move_together(vec: np.ndarray, p: CPSMParams) -> bool:
    """Whether (N, 2) motion vectors move as one: their spread below ``motion_coherence`` times
    the length of their mean."""
    mean = vec.mean(axis=0)
    spread = float(np.sqrt(((vec - mean) ** 2).sum(axis=1).mean()))
    return spread < p.motion_coherence * float(np.hypot(*mean))


def _still_while_strokes_move_apart(motion: np.ndarray, strokes: np.ndarray, p: CPSMParams) -> np.ndarray | None:
    """Pixels still (below ``motion_static`` px) over every neighbouring frame over which the
    strokes clearly move, but not together (see ``CPSMParams.novel_moves``); None when they do not."""
    if not strokes.any():
        return None
    ks = [k for k, vec in _moving_neighbours(motion, strokes, p) if not _move_together(vec, p)]
    if not ks:
        return None
    still = np.ones(strokes.shape, bool)
    for k in ks:
        still &= _speed(motion, k) < p.motion_static
    return still


def _pixels_moving_apart(motion: np.ndarray, reference: np.ndarray, p: CPSMParams) -> np.ndarray | None:
    """Share (0..1) of the neighbouring frames over which a pixel moves unlike the ``reference``
    pixels (the object's strokes, and its trusted prior mask) while they move as one rigid body
    (see ``CPSMParams.motion_apart``); None when they do not."""
    if not reference.any():
        return None
    apart = np.zeros(reference.shape, np.float32)
    n = 0
    for k, ref_vec in _moving_neighbours(motion, reference, p):
        own = np.median(ref_vec, axis=0)
        speed = float(np.hypot(*own))
        spread = float(np.sqrt(((ref_vec - own) ** 2).sum(axis=1).mean()))
        if spread >= p.motion_rigid * speed:
            continue  # not as one body (a dancer, a walking dog)
        vec = _vectors(motion, k)
        apart += np.hypot(vec[..., 0] - own[0], vec[..., 1] - own[1]) > max(p.motion_apart, p.motion_apart_share * speed)
        n += 1
    return apart / n if n else None


def _regions_not_reached(mask: np.ndarray, strokes: np.ndarray, reach: float) -> np.ndarray:
    """``mask`` without its 8-connected regions that come within ``reach`` px of a ``strokes`` pixel."""
    if not strokes.any() or not mask.any():
        return mask
    lab, _ = ndi.label(mask, structure=np.ones((3, 3)))
    hit = np.unique(lab[mask & (_distance_from(strokes) <= reach)])
    return mask & ~np.isin(lab, hit[hit > 0])


def _pixels_moving_with(motion: np.ndarray, reference: np.ndarray, surroundings: np.ndarray, p: CPSMParams,
                        fastest: float) -> np.ndarray | None:
    """Pixels that move (above ``motion_moving`` px) over every neighbouring frame over which the
    ``reference`` pixels move clearly (their median residual motion between ``motion_moving`` and
    ``fastest`` px); None when the reference does not move so or 15% or more of the
    ``surroundings`` move too (see ``CPSMParams.motion_object`` and ``CPSMParams.moving_parts``).
    The flow spreads a moving object's motion over the ground beside it: erode the answer."""
    if not reference.any() or not surroundings.any():
        return None
    ks = [k for k in range(_n_neighbours(motion))
          if p.motion_moving < float(np.median(_speed(motion, k)[reference])) < fastest]
    if not ks:
        return None
    moving = np.ones(reference.shape, bool)
    for k in ks:
        moving &= _speed(motion, k) > p.motion_moving
    if moving[surroundings].mean() >= 0.15:
        return None
    return moving


def _changing(motion: np.ndarray, p: CPSMParams) -> np.ndarray:
    """Pixels whose colour changes by more than ``motion_change`` against every neighbouring frame
    (the camera's motion undone; False where it was not measured)."""
    return _least_change(motion) > p.motion_change  # (NaN > x: False)


def _disc(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def _eroded(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` eroded by a disc of radius ``px``."""
    return cv2.erode(mask.astype(np.uint8), _disc(px)) > 0


def _band(mask: np.ndarray, px: int) -> np.ndarray:
    """Pixels within about ``px`` of the outline of ``mask``: dilated minus eroded by a disc of radius ``px``."""
    return (cv2.dilate(mask.astype(np.uint8), _disc(px)) > 0) & ~_eroded(mask, px)


def _local_intensity_prob(
    light: np.ndarray, strokes: np.ndarray, active: list[int], starts: dict[int, float], level: float,
    faint_contrast: float = 0.0, faint_smooth: float = 3.0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Foreground probability of a grey image from per-object local intensity thresholds.

    Every pixel is judged by the object whose stroke is nearest: its threshold lies at
    ``level`` of the way from the local background intensity (median beyond the object's
    start distance from every stroke, within three start distances of the object) to the
    median intensity under the object's stroke.  Dim and bright nuclei of one frame so
    get their own thresholds.  An object whose stroke stands out by less than
    ``faint_contrast`` times its background's noise is judged on the frame smoothed by
    ``faint_smooth`` px.  Returns (probability, index into ``active`` of the object whose
    stroke is nearest, per pixel), or None when no object has a brighter-than-background
    stroke.
    """
    sm = cv2.GaussianBlur(light, (0, 0), 1.0)
    smoother = cv2.GaussianBlur(light, (0, 0), faint_smooth) if faint_contrast > 0 else None
    any_stroke = np.isin(strokes, active)
    if not any_stroke.any():
        return None
    d_all, idx = ndi.distance_transform_edt(~any_stroke, return_indices=True)
    owner = strokes[idx[0], idx[1]]
    thr = np.full(len(active), np.nan, np.float32)
    scale = np.full(len(active), np.nan, np.float32)
    faint = np.zeros(len(active), bool)
    for j, k in enumerate(active):
        sk = strokes == k
        if not sk.any():
            continue
        fg = float(np.median(sm[sk]))
        near = (owner == k) | (_distance_from(sk) < 3.0 * starts[k])
        ring = near & (d_all > starts[k])
        if ring.sum() < 10:
            continue
        bg = float(np.median(sm[ring]))
        if smoother is not None and fg - bg < faint_contrast * 1.4826 * float(np.median(np.abs(sm[ring] - bg))):
            faint[j] = True  # (lost in the noise pixel by pixel: judged on a smoother frame)
            fg, bg = float(np.median(smoother[sk])), float(np.median(smoother[ring]))
        if fg - bg <= 1e-3:
            continue
        thr[j] = bg + level * (fg - bg)
        scale[j] = 0.15 * (fg - bg)
    if np.isnan(thr).all():
        return None
    ok = ~np.isnan(thr)
    thr[~ok] = np.nanmedian(thr)
    scale[~ok] = np.nanmedian(scale)
    # (ids can be as large as 2**31 - 1: looked up by sorting, not in an id-sized table)
    ids = np.asarray(active)
    order = np.argsort(ids)
    j = order[np.clip(np.searchsorted(ids[order], owner), 0, len(ids) - 1)]
    if faint.any():
        sm = np.where(faint[j], smoother, sm)
    z = np.clip((sm - thr[j]) / scale[j], -30, 30)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32), j


def _assign(fg: np.ndarray, strokes: np.ndarray, prior: np.ndarray, active: list[int]) -> np.ndarray:
    """Split the foreground among the active objects by a seeded watershed from their strokes
    on the distance transform of the foreground."""
    markers = np.zeros(fg.shape, np.int32)
    for k in active:
        pk = (prior == k) & fg & (strokes < 0)
        if pk.any():
            pk = cv2.erode(pk.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            markers[pk] = k
    for k in active:
        markers[strokes == k] = k
    if len(active) == 1:
        lab, _ = ndi.label(fg, structure=np.ones((3, 3)))
        keep = np.unique(lab[(markers > 0) & fg])
        keep = keep[keep > 0]
        return np.where(np.isin(lab, keep), active[0], 0).astype(np.uint32)
    # shape-based split: touching blobs meet at the neck of the foreground (measured better
    # than the image gradient, which also follows texture inside nuclei)
    elev = -cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 5)
    lab = watershed(elev, markers=markers, mask=fg | (markers > 0))
    return lab.astype(np.uint32)


def _split_by_appearance(labels: np.ndarray, marks: np.ndarray, active: list[int],
                         feats: np.ndarray, image: np.ndarray, p: CPSMParams,
                         rng: np.random.Generator) -> np.ndarray:
    """Re-split, by appearance, the pieces of the foreground that hold two or more objects.

    ``labels`` is the shape-based split of :func:`_assign`; ``marks`` holds each object's id on
    its strokes and on the blob core under a click, 0 elsewhere.  Per object, a classifier of
    its marked pixels against the other objects' gives its share of each pixel's appearance; a
    graph cut per object (its pixels against the others', edges following ``image``) decides,
    leaving the shape's label costing ``appearance_split``.  A pixel claimed by no cut or by
    several, and a piece cut off from its object's marks, keep the shape's label, so objects that
    look alike keep the shape's split.  With ``fine_mix`` > 0 the pixels near the borders between
    objects are then split again with their finest-scale colour (:func:`_refine_split_border`).
    """
    fg = labels > 0
    markers = marks.astype(np.int32)
    piece, _ = ndi.label(fg, structure=np.ones((3, 3)))
    marked = markers > 0
    piece_ids, n_objects = np.unique(np.unique(np.stack([piece[marked], markers[marked]]), axis=1)[0],
                                     return_counts=True)
    shared = piece_ids[(piece_ids > 0) & (n_objects > 1)]
    if not shared.size:  # (objects apart: the shape's split is the split)
        return labels
    fg = np.isin(piece, shared)
    markers[~fg] = 0
    ids = [k for k in active if (markers == k).any()]
    box = _bounding_box(fg, 1)
    fg_b, lab_b, mk_b, feats_b = fg[box], labels[box], markers[box], feats[box]
    wc = fg_b.shape[1]
    probs = []
    for k in ids:
        xs, ys = [], []
        for j in ids:
            idx = _sample(mk_b == j, p.n_samples // (1 if j == k else len(ids) - 1), rng)
            xs.append(feats_b[idx // wc, idx % wc])
            ys.append(np.full(len(idx), 1.0 if j == k else 0.0, np.float32))
        clf = PixelClassifier(n_trees=p.n_trees, seed=p.seed).fit(np.concatenate(xs), np.concatenate(ys))
        probs.append(_predict(clf, feats_b, p.predict_pixels))
    probs = np.stack(probs) + 1e-3
    share = probs / probs.sum(axis=0)
    img_b = np.ascontiguousarray(image[box])
    claims = _claims(share, lab_b, mk_b, ids, img_b, fg_b & (mk_b == 0), p)
    out_b = _decide(claims, ids, fg_b, lab_b, mk_b)
    if p.fine_mix > 0:
        out_b = _refine_split_border(out_b, lab_b, fg_b, mk_b, ids, share, feats_b, img_b, p, rng)
    out = labels.copy()
    out[box] = out_b
    return out


def _claims(share: np.ndarray, shape_lab: np.ndarray, held: np.ndarray, ids: list[int], image: np.ndarray,
            free: np.ndarray, p: CPSMParams) -> np.ndarray:
    """Per object of ``ids`` (share ``share[i]`` of each pixel's appearance), a graph cut of its
    pixels against the others': leaving the shape's label ``shape_lab`` costs
    ``appearance_split``; pixels not ``free`` stay as ``held`` labels them.  Returns
    (len(ids), H, W) bool: the pixels each object claims."""
    claims = []
    for i, k in enumerate(ids):
        u_in = -np.log(share[i]) + p.appearance_split * (shape_lab != k)
        u_out = -np.log(1.0 - share[i] + 1e-3) + p.appearance_split * (shape_lab == k)
        u_in[~free & (held != k)] = _HARD
        u_out[~free & (held == k)] = _HARD
        claims.append(cut(u_in.astype(np.float32), u_out.astype(np.float32), image, p.smooth, free))
    return np.stack(claims)


def _decide(claims: np.ndarray, ids: list[int], where: np.ndarray, otherwise: np.ndarray,
            marks: np.ndarray) -> np.ndarray:
    """Each pixel of ``where`` claimed by exactly one object gets its id, the rest keep
    ``otherwise``; an object's pieces cut off from its ``marks`` go back to ``otherwise``."""
    one = (claims.sum(axis=0) == 1) & where
    out = np.where(one, np.asarray(ids, np.uint32)[np.argmax(claims, axis=0)], otherwise)
    for k in ids:
        part, _ = ndi.label(out == k, structure=np.ones((3, 3)))
        kept = np.unique(part[marks == k])
        stray = (part > 0) & ~np.isin(part, kept[kept > 0])
        out[stray] = otherwise[stray]
    return out


def _refine_split_border(labels: np.ndarray, shape_lab: np.ndarray, fg: np.ndarray, marks: np.ndarray,
                         ids: list[int], share: np.ndarray, feats: np.ndarray, image: np.ndarray,
                         p: CPSMParams, rng: np.random.Generator) -> np.ndarray:
    """Re-decide the pixels within ``refine_band`` px of where two objects of ``labels`` meet,
    half of each one's share there from a model of the finest-scale colour learned from its
    own pixels ``fine_gap`` to ``fine_gap`` + band px from the border (the multiscale features
    blur across it, as across an outline: see :func:`_fine_outline_prob`)."""
    band_px, gap = p.refine_band, p.fine_gap
    inside = {k: _distance_from((labels != k) & (labels > 0)) for k in ids}  # from the other objects
    band = np.zeros(fg.shape, bool)
    for k in ids:
        band |= (labels == k) & (inside[k] < band_px)
    band &= fg & (marks == 0)
    if not band.any():
        return labels
    fine = feats[..., FINEST_COLOUR]
    wc = fg.shape[1]
    rings = {k: (labels == k) & (inside[k] >= gap) & (inside[k] < gap + band_px) for k in ids}
    mixed = share.copy()
    for i, k in enumerate(ids):
        xs, ys = [], []
        for j in ids:
            idx = _sample(rings[j], p.n_samples // (1 if j == k else len(ids) - 1), rng)
            xs.append(fine[idx // wc, idx % wc])
            ys.append(np.full(len(idx), 1.0 if j == k else 0.0, np.float32))
        y = np.concatenate(ys)
        if (y == 1).sum() < 20 or (y == 0).sum() < 20:  # (a sliver of an object: the split stays)
            return labels
        clf = PixelClassifier(n_trees=p.n_trees, seed=p.seed).fit(np.concatenate(xs), y)
        mixed[i][band] = (1.0 - p.fine_mix) * share[i][band] + p.fine_mix * clf.predict_proba(fine[band])
    mixed /= mixed.sum(axis=0)
    claims = _claims(mixed, shape_lab, labels, ids, image, band, p)
    return _decide(claims, ids, band, labels, marks)
