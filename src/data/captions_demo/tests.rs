//! Scene composition, captions and the folder written, on synthetic items.

use super::*;

/// 10 classes, each item a 28 x 28 square of value 20 + class.
fn labelled() -> Labelled {
    let samples = |n: usize| -> Vec<Sample> {
        (0..n)
            .map(|index| Sample {
                index,
                label: index % 10,
                image: Image::Grey {
                    width: 28,
                    height: 28,
                    pixels: vec![20 + (index % 10) as u8; 28 * 28],
                },
            })
            .collect()
    };
    Labelled {
        classes: crate::data::images::FASHION_CLASSES
            .map(String::from)
            .to_vec(),
        train: samples(40),
        test: Some(samples(20)),
    }
}

fn item(cell: usize, class: usize) -> Item {
    Item {
        cell,
        class,
        source: class,
        x: (cell as u32 % 2) * 32,
        y: (cell as u32 / 2) * 32,
    }
}

#[test]
fn captions_say_what_is_where() {
    let row = Scene {
        items: vec![item(0, 7), item(1, 8)],
    };
    assert_eq!(
        captions(&row),
        [
            "A sneaker to the left of a bag at the top.",
            "A bag to the right of a sneaker, both at the top."
        ]
    );
    let column = Scene {
        items: vec![item(1, 3), item(3, 4)],
    };
    assert_eq!(captions(&column)[0], "A dress above a coat on the right.");
    let diagonal = Scene {
        items: vec![item(1, 9), item(2, 1)],
    };
    assert_eq!(
        captions(&diagonal),
        [
            "An ankle boot at the top right and a pair of trousers at the bottom left.",
            "A pair of trousers at the bottom left and an ankle boot at the top right."
        ]
    );
    let three = Scene {
        items: vec![item(0, 6), item(1, 5), item(3, 0)],
    };
    assert_eq!(
        captions(&three)[0],
        "A shirt at the top left, a sandal at the top right and a t-shirt at the bottom right."
    );
}

#[test]
fn named_classes_reads_the_phrases_back() {
    assert_eq!(named_classes("A t-shirt above a shirt"), vec![0, 6]);
    assert_eq!(
        named_classes("a pair of trousers and an ankle boot, a bag"),
        vec![1, 9, 8]
    );
    assert!(names_the_labels("a bag to the left of a sneaker", &[7, 8]));
    assert!(!names_the_labels("a bag to the left of a bag", &[7, 8]));
    assert!(!names_the_labels("a bag", &[8, 8]));
    assert!(named_classes("boots and trousers").is_empty());
}

#[test]
fn every_generated_caption_names_its_scene_s_labels() {
    let l = labelled();
    let scenes = compose(&l.train, 300, &mut SeededRng::new(5));
    let mut counts = [0usize; 5];
    for s in &scenes {
        counts[s.items.len()] += 1;
        let labels: Vec<usize> = s.items.iter().map(|i| i.class).collect();
        for c in captions(s) {
            assert!(names_the_labels(&c, &labels), "{c:?} for {labels:?}");
        }
        // distinct cells in reading order, items inside their cells
        assert!(s.items.windows(2).all(|w| w[0].cell < w[1].cell));
        for i in &s.items {
            let (cx, cy) = ((i.cell as u32 % 2) * 32, (i.cell as u32 / 2) * 32);
            assert!((cx..=cx + 4).contains(&i.x) && (cy..=cy + 4).contains(&i.y));
        }
    }
    // two, three and four items all occur
    assert!(
        counts[2] > 50 && counts[3] > 50 && counts[4] > 50,
        "{counts:?}"
    );
}

#[test]
fn render_places_each_item_in_its_cell() {
    let l = labelled();
    let scene = Scene {
        items: vec![
            Item {
                x: 3,
                y: 1,
                ..item(0, 2)
            },
            item(3, 5),
        ],
    };
    let img = render(&scene, &l.train).unwrap();
    assert_eq!(img.dimensions(), (64, 64));
    assert_eq!(img.get_pixel(3, 1).0[0], 22);
    assert_eq!(img.get_pixel(2, 1).0[0], 0);
    assert_eq!(img.get_pixel(30, 28).0[0], 22);
    assert_eq!(img.get_pixel(31, 28).0[0], 0);
    assert_eq!(img.get_pixel(63, 63).0[0], 0);
    assert_eq!(img.get_pixel(59, 59).0[0], 25);
    assert_eq!(img.get_pixel(40, 10).0[0], 0);
}

#[test]
fn the_folder_is_deterministic_and_never_overwritten() {
    let l = labelled();
    let opts = DemoOptions {
        train: 12,
        test: 6,
        seed: 3,
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let m = write(&l, &opts, &a).unwrap();
    write(&l, &opts, &b).unwrap();
    assert_eq!((m.train_images, m.test_images), (12, 6));
    for f in [
        "train.csv",
        "test.csv",
        "images/train/00011.png",
        "images/test/00005.png",
    ] {
        assert_eq!(
            fs::read(a.join(f)).unwrap(),
            fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let csv = fs::read_to_string(a.join("train.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "image,caption,labels");
    assert_eq!(lines.len(), 1 + 2 * 12);
    assert!(
        lines[1].starts_with("images/train/00000.png,"),
        "{}",
        lines[1]
    );
    // a second build into the same folder is refused, the first left whole
    let err = write(&l, &opts, &a).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    assert!(a.join("dataset.json").exists());
    // build() reuses a finished folder of the same options, refuses other options
    let home = tmp.path().join("home");
    let again = build(&opts, Some(&a), &home, &mut |_| {}).unwrap();
    assert!(again.already_present);
    let other = DemoOptions { seed: 4, ..opts };
    let err = build(&other, Some(&a), &home, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("remove it or pass another --out"),
        "{err}"
    );
    // and a folder that is not a build is not touched
    let stray = tmp.path().join("stray");
    fs::create_dir_all(&stray).unwrap();
    let err = build(&opts, Some(&stray), &home, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("is not a finished captions-demo"),
        "{err}"
    );
}
