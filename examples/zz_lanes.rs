use recur::{compile, ModelSpec, TrainSpec};
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (e, h, l, t) = (args[0], args[1], args[2], args[3]);
    let model = ModelSpec::lstm(256, e, h, l).unwrap();
    let mut train = TrainSpec::new(32, t).unwrap();
    train.lanes = 2;
    let p = compile(&model, &train).unwrap();
    let lanes = p.lanes.as_ref().unwrap();
    println!(
        "estimate serial {:.1} ms, two lanes {:.1} ms",
        lanes.estimate.0 / 1e6,
        lanes.estimate.1 / 1e6
    );
    for (i, op) in p
        .ops
        .iter()
        .enumerate()
        .take(args.get(4).copied().unwrap_or(60))
    {
        println!(
            "{i:4} lane {} wait {:4} {:?}",
            lanes.lane[i],
            lanes.wait[i],
            op.kind()
        );
    }
}
