//! §6.3.7 Multi most common in window (MultiMCW) prediction estimate: four predictors, each
//! predicting the most common symbol of the last 63, 255, 1023 or 4095 samples (ties: the one seen
//! most recently), and a scoreboard choosing which to follow. Follows `multi_mcw_test.h` of the
//! reference tool, including how its windows are primed.

use super::Predictions;
use super::Tally;

const WINDOWS: [usize; 4] = [63, 255, 1023, 4095];

/// `symbols` are 0..k. None with fewer than 4096 samples.
pub fn multi_mcw(symbols: &[u8], k: usize) -> Option<Predictions> {
    let len = symbols.len();
    let nw = WINDOWS.len();
    if len < WINDOWS[nw - 1] + 1 {
        return None;
    }
    let mut counts = vec![[0u32; 256]; nw];
    let mut poses = vec![[0usize; 256]; nw];
    let mut max_cnt = [0u32; 4];
    let mut frequent = [0u8; 4];
    let mut score = [0u64; 4];
    let mut winner = 0usize;
    for (i, &s) in symbols.iter().enumerate().take(WINDOWS[nw - 1]) {
        for j in 0..nw {
            if i < WINDOWS[j] {
                counts[j][s as usize] += 1;
                if max_cnt[j] <= counts[j][s as usize] {
                    max_cnt[j] = counts[j][s as usize];
                    frequent[j] = s;
                }
                poses[j][s as usize] = i;
            }
        }
    }
    let mut tally = Tally::default();
    for i in WINDOWS[0]..len {
        let s = symbols[i];
        if frequent[winner] == s {
            tally.hit();
        } else {
            tally.miss();
        }
        for j in 0..nw {
            if i >= WINDOWS[j] && frequent[j] == s {
                score[j] += 1;
                if score[j] >= score[winner] {
                    winner = j;
                }
            }
        }
        for j in 0..nw {
            let w = WINDOWS[j];
            if i < w {
                continue;
            }
            let old = symbols[i - w];
            counts[j][old as usize] -= 1;
            counts[j][s as usize] += 1;
            poses[j][s as usize] = i;
            if old != frequent[j] && max_cnt[j] <= counts[j][s as usize] {
                max_cnt[j] = counts[j][s as usize];
                frequent[j] = s;
            } else if old == frequent[j] {
                max_cnt[j] -= 1;
                let mut max_pos = i - w;
                for y in 0..k {
                    let c = counts[j][y];
                    if max_cnt[j] < c || (max_cnt[j] == c && max_pos <= poses[j][y]) {
                        max_cnt[j] = c;
                        frequent[j] = y as u8;
                        max_pos = poses[j][y];
                    }
                }
            }
        }
    }
    Some(tally.finish((len - WINDOWS[0]) as u64))
}
