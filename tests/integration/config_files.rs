//! Config files from the command line: JavaScript configs evaluated by the
//! real `node`, JSON as PM2 reads it, YAML, a config on stdin, `corral
//! ecosystem`, and what happens to unknown keys.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::util::*;

fn names(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|d| d["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(h: &TestHome, name: &str, body: &str) {
    let path = h.work.join(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, body).unwrap();
}

/// No daemon was started for this home.
fn no_daemon(h: &TestHome) -> bool {
    !h.socket().exists() && !h.pid_file().exists()
}

#[test]
fn javascript_configs_are_evaluated_by_node_not_run() {
    let h = TestHome::new();
    // CommonJS, in a subdirectory: its apps' cwd is that directory. A
    // function and an undefined value are dropped as JSON.stringify does;
    // what the config prints goes to stderr, not into the config.
    write(
        &h,
        "conf/ecosystem.config.js",
        "console.log('hello from the config');\n\
         const port = process.env.CFG_PORT;\n\
         module.exports = {\n\
           apps: [{\n\
             name: 'cjs', script: 'sleep', args: '1000', kill_timeout: 300,\n\
             env: { PORT: port },\n\
             merge_logs: undefined,\n\
             post_start() { return 1; },\n\
           }],\n\
           deploy: { production: { user: 'x' } },\n\
         };\n",
    );
    let mut cmd = h.command(&["start", "conf/ecosystem.config.js"]);
    cmd.env("CFG_PORT", "4321");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("hello from the config"),
        "{}",
        text(&out)
    );
    assert!(!stderr(&out).contains("warning"), "{}", text(&out));
    let d = h.describe("cjs");
    assert_eq!(env_of(&d, "status"), "online", "{d}");
    assert_eq!(env_of(&d, "env"), json!({"PORT": "4321"}));
    assert_eq!(
        Path::new(env_of(&d, "pm_cwd").as_str().unwrap()),
        h.work.join("conf")
    );

    // `.cjs`, and an ES module (`.mjs`: the default export).
    write(
        &h,
        "app.config.cjs",
        "module.exports = [{ name: 'cjs2', script: 'sleep', args: ['1000'] }];\n",
    );
    write(
        &h,
        "ecosystem.config.mjs",
        "const apps = [{ name: 'esm', script: 'sleep', args: ['1000'] }];\n\
         export default { apps };\n",
    );
    // A `.js` config in an ES module package: require refuses it, import
    // reads it.
    write(&h, "pkg/package.json", "{\"type\": \"module\"}\n");
    write(
        &h,
        "pkg/ecosystem.config.js",
        "export default { apps: [{ name: 'esmjs', script: 'sleep', args: '1000' }] };\n",
    );
    for file in [
        "app.config.cjs",
        "ecosystem.config.mjs",
        "pkg/ecosystem.config.js",
    ] {
        let out = h.corral(&["start", file]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out));
    }
    let list = h.list();
    assert_eq!(names(&list), ["cjs", "cjs2", "esm", "esmjs"]);
    for d in &list {
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert!(
            env_of(d, "pm_exec_path")
                .as_str()
                .unwrap()
                .ends_with("sleep"),
            "{d}"
        );
    }
}

#[test]
fn a_javascript_config_that_throws_is_an_error_naming_the_file() {
    let h = TestHome::new();
    write(
        &h,
        "bad.config.js",
        "const a = 1;\nthrow new Error('no database url');\n",
    );
    let out = h.corral(&["start", "bad.config.js"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("bad.config.js: evaluating it with node failed"),
        "{err}"
    );
    assert!(err.contains("Error: no database url"), "{err}");
    assert!(err.contains("bad.config.js:2"), "{err}");

    write(
        &h,
        "syntax.config.js",
        "module.exports = { apps: [ { name: 'x' script: 'y' } ] };\n",
    );
    let out = h.corral(&["start", "syntax.config.js"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("SyntaxError"), "{}", text(&out));

    // Nothing was started, not even the daemon.
    assert!(no_daemon(&h));
}

#[test]
fn a_javascript_config_without_node_says_so() {
    let h = TestHome::new();
    write(
        &h,
        "ecosystem.config.js",
        "module.exports = { apps: [{ script: 'sleep' }] };\n",
    );
    let empty = h.work.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = h.command(&["start", "ecosystem.config.js"]);
    cmd.env("PATH", &empty);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("ecosystem.config.js:"), "{err}");
    assert!(err.contains("node is not on PATH"), "{err}");
    assert!(no_daemon(&h));
}

#[test]
fn json_configs_are_read_as_pm2_reads_them() {
    let h = TestHome::new();
    write(
        &h,
        "process.json",
        "// the apps\n\
         {\n\
           apps: [\n\
             { /* web */ name: 'web', script: \"sleep\", args: '1000', },\n\
             {name: 'api', script: 'sleep', args: ['1000'],},\n\
           ],\n\
         }\n",
    );
    let out = h.corral(&["start", "process.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(names(&h.list()), ["api", "web"]);

    write(
        &h,
        "broken.json",
        "{\n  \"apps\": [\n    {\"name\": \"a\"\n     \"script\": \"b\"}\n  ]\n}\n",
    );
    let out = h.corral(&["start", "broken.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(
            "broken.json line 4: expected `,` or `}` after the value of `name`, found `\"`"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn yaml_configs_start_and_what_is_beyond_them_is_refused_with_the_line() {
    let h = TestHome::new();
    write(
        &h,
        "ecosystem.yml",
        concat!(
            "# two apps\n",
            "apps:\n",
            "  - name: y1\n",
            "    script: sleep\n",
            "    args: [\"1000\"]\n",
            "    env:\n",
            "      MODE: 'yaml'\n",
            "      COUNT: 3\n",
            "  - name: y2\n",
            "    script: sleep\n",
            "    args: |\n",
            "      1000\n",
        ),
    );
    let out = h.corral(&["start", "ecosystem.yml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(names(&h.list()), ["y1", "y2"]);
    assert_eq!(
        env_of(&h.describe("y1"), "env"),
        json!({"MODE": "yaml", "COUNT": "3"})
    );

    write(
        &h,
        "anchors.yaml",
        "base: &base\n  script: sleep\napps:\n  - <<: *base\n",
    );
    let out = h.corral(&["start", "anchors.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("anchors.yaml line 1: anchors (&) are not supported"),
        "{}",
        text(&out)
    );
}

#[test]
fn start_dash_reads_the_config_from_stdin() {
    let h = TestHome::new();
    let cases = [
        (
            "stdin.json",
            "{apps: [{name: 'fromjson', script: 'sleep', args: '1000'}]}\n",
        ),
        (
            "stdin.yml",
            "apps:\n  - name: fromyaml\n    script: sleep\n    args: 1000\n",
        ),
    ];
    for (file, body) in cases {
        write(&h, file, body);
        let input = std::fs::File::open(h.work.join(file)).unwrap();
        let out = run_with_stdin(h.command(&["start", "-"]), Stdio::from(input));
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out));
    }
    let list = h.list();
    assert_eq!(names(&list), ["fromjson", "fromyaml"]);
    for d in &list {
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert_eq!(
            Path::new(env_of(d, "pm_cwd").as_str().unwrap()),
            h.work.as_path()
        );
    }

    write(&h, "bad.yml", "apps:\n  - name: x\n    name: y\n");
    let input = std::fs::File::open(h.work.join("bad.yml")).unwrap();
    let out = run_with_stdin(h.command(&["start", "-"]), Stdio::from(input));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("stdin line 3: duplicate key `name`"),
        "{}",
        text(&out)
    );
}

#[test]
fn ecosystem_writes_a_sample_that_starts_and_keeps_an_existing_one() {
    let h = TestHome::new();
    let out = h.corral(&["ecosystem"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let path = h.work.join("ecosystem.config.js");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&path.display().to_string()),
        "{}",
        text(&out)
    );
    let sample = read(&path);
    assert!(sample.contains("module.exports"), "{sample}");

    // A second time it refuses, and leaves the file as it was.
    std::fs::write(&path, "// mine\n").unwrap();
    let out = h.corral(&["init"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(read(&path), "// mine\n");
    let out = h.corral(&["ecosystem", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(&path), sample);

    // The sample runs as it is, given its index.js; `start` alone starts
    // ./ecosystem.config.js, as PM2's does.
    write(&h, "index.js", "setInterval(() => {}, 60000);\n");
    let out = h.corral(&["start", "--env", "production"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = h.wait_status("app", "online");
    assert_eq!(env_of(&d, "env")["NODE_ENV"], json!("production"));
    assert_eq!(env_of(&d, "exec_mode"), "fork_mode");
}

#[test]
fn a_misspelt_key_is_an_error_and_a_custom_key_a_warning() {
    let h = TestHome::new();
    write(
        &h,
        "typo.json",
        "{\"apps\": [{\"name\": \"t\", \"script\": \"sleep\", \"args\": \"1000\", \"instnces\": 2}]}",
    );
    let out = h.corral(&["start", "typo.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("option `instnces`: unknown option; did you mean `instances`?"),
        "{}",
        text(&out)
    );
    assert!(h.list().is_empty());

    write(
        &h,
        "custom.json",
        "{\"apps\": [{\"name\": \"c\", \"script\": \"sleep\", \"args\": \"1000\", \"owner\": \"team-a\"}]}",
    );
    let out = h.corral(&["start", "custom.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("warning: option `owner` is unknown; ignored"),
        "{}",
        text(&out)
    );
    assert_eq!(env_of(&h.describe("c"), "status"), "online");
}

#[test]
fn instances_without_exec_mode_is_cluster_for_node_fork_for_others() {
    let h = TestHome::new();
    h.script("idle.js", "setInterval(() => {}, 60000);\n");
    write(
        &h,
        "modes.json",
        "{apps: [\n\
           {name: 'nodes', script: 'idle.js', instances: 2},\n\
           {name: 'sleeps', script: 'sleep', args: '1000', instances: 2},\n\
         ]}",
    );
    let out = h.corral(&["start", "modes.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (name, mode) in [("nodes", "cluster_mode"), ("sleeps", "fork_mode")] {
        let all = h.describe_all(json!(name));
        assert_eq!(all.len(), 2, "{all:?}");
        for d in &all {
            assert_eq!(env_of(d, "exec_mode"), mode, "{d}");
        }
    }
}

#[test]
fn a_script_that_is_not_a_config_still_runs_as_an_app() {
    let h = TestHome::new();
    h.script("config.js", "setInterval(() => {}, 60000);\n");
    let out = h.corral(&["start", "config.js", "--name", "plain"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = h.wait_status("plain", "online");
    assert_eq!(env_of(&d, "exec_interpreter"), "node");
    assert!(
        env_of(&d, "pm_exec_path")
            .as_str()
            .unwrap()
            .ends_with("config.js")
    );
}
