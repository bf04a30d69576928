use prost::Message;
use smd_onnx::ensemble::*;
use smd_onnx::onnx::proto::*;
use smd_onnx::TensorData;

fn vals(t: &TensorProto) -> Option<TensorData> {
    if t.data_type != Some(1) { return None; }
    if let Some(r) = &t.raw_data { return Some(TensorData::F32(r.chunks(4).map(|c| f32::from_le_bytes([c[0],c[1],c[2],c[3]])).collect())); }
    if !t.float_data.is_empty() { return Some(TensorData::F32(t.float_data.clone())); }
    None
}
fn walk(g: &GraphProto, scope: &str, out: &mut Vec<(TensorAddr, Vec<i64>, TensorData)>) {
    for t in &g.initializer { if t.dims.len() >= 2 { if let Some(v) = vals(t) { out.push((TensorAddr{scope: scope.into(), name: t.name.clone().unwrap()}, t.dims.clone(), v)); } } }
    for (j, n) in g.node.iter().enumerate() {
        if n.op_type.as_deref() == Some("Constant") {
            for a in &n.attribute { if let Some(t) = &a.t { if t.dims.len() >= 2 { if let Some(v) = vals(t) { out.push((TensorAddr{scope: scope.into(), name: n.output[0].clone()}, t.dims.clone(), v)); } } } }
        }
        for a in &n.attribute {
            let node_id = n.name.clone().filter(|s| !s.is_empty()).unwrap_or(format!("{}#{j}", n.op_type.clone().unwrap()));
            if let Some(sg) = &a.g { let s = if scope.is_empty() { format!("{node_id}/{}", a.name.clone().unwrap()) } else { format!("{scope}/{node_id}/{}", a.name.clone().unwrap()) }; walk(sg, &s, out); }
        }
    }
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, outdir, k, mode) = (&args[1], &args[2], args[3].parse::<usize>().unwrap(), args[4].as_str());
    let bytes = std::fs::read(path).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let mut ts = Vec::new();
    walk(m.graph.as_ref().unwrap(), "", &mut ts);
    let mut seed = 12345u64;
    let mut rnd = || { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; seed };
    let mut varying = Vec::new();
    for (addr, dims, base) in ts {
        let n = base.len();
        let mut changes: Vec<Option<Change>> = vec![None; k];
        let mut per: Vec<Vec<u32>> = vec![Vec::new(); k];
        for j in 0..n {
            match mode {
                "partition" => { per[(rnd() % k as u64) as usize].push(j as u32); }
                _ => { for i in 0..k { if rnd() % 10 == 0 { per[i].push(j as u32); } } }
            }
        }
        let TensorData::F32(b) = &base else { panic!() };
        for i in 0..k { 
            let noise: Vec<f32> = per[i].iter().map(|&j| b[j as usize] + ((j as f32 * 0.37).sin() * 0.5)).collect();
            changes[i] = Some(Change { indices: per[i].clone(), values: TensorData::F32(noise) });
        }
        eprintln!("varying {:?} n={n}", addr);
        varying.push(Varying { addr, dims, base, changes });
    }
    let w = vec![1.0; k];
    let built = compact(&m, &varying, &w, &Heads::Combined { combine: Combine::Probs, probabilities: None }, &[]).unwrap();
    eprintln!("notices {:?} enc {:?}", built.notices, built.encodings);
    std::fs::create_dir_all(outdir).unwrap();
    std::fs::write(format!("{outdir}/ensemble.onnx"), built.model.encode_to_vec()).unwrap();
    let pm = compact(&m, &varying, &w, &Heads::PerMember { output: m.graph.as_ref().unwrap().output[0].name.clone().unwrap() }, &[]).unwrap();
    std::fs::write(format!("{outdir}/permember.onnx"), pm.model.encode_to_vec()).unwrap();
    // members as standalone: compact with single member weight (member i only)
    for i in 0..k {
        let vi: Vec<Varying> = varying.iter().map(|v| Varying { addr: v.addr.clone(), dims: v.dims.clone(), base: member_values(v, i), changes: vec![None] }).collect();
        let mi = compact(&m, &vi, &[1.0], &Heads::Combined { combine: Combine::Mean, probabilities: None }, &[]).unwrap();
        std::fs::write(format!("{outdir}/member{i}.onnx"), mi.model.encode_to_vec()).unwrap();
    }
}
