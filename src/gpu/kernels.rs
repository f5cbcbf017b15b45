//! WGSL kernels: the shader files, their tiny `{{NAME}}` preprocessing, and the pipeline cache
//! keyed by (file, entry point, defines) so each variant is compiled exactly once.

use std::collections::HashMap;
use std::sync::Mutex;

/// A `.wgsl` file from `shaders/`, embedded in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shader {
    /// The file name, used in labels so a validation error names the kernel.
    pub name: &'static str,
    /// The WGSL text, with `{{NAME}}` placeholders for defines.
    pub source: &'static str,
}

/// Compile-time constants substituted into a shader's `{{NAME}}` placeholders.
pub type Defines = Vec<(&'static str, String)>;

/// Replaces each `{{NAME}}` with its define. Returns the names of placeholders left unfilled.
pub fn preprocess(source: &str, defines: &[(&'static str, String)]) -> (String, Vec<String>) {
    let mut text = source.to_owned();
    for (name, value) in defines {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    let mut missing = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("{{") {
        let tail = &rest[start + 2..];
        let end = tail.find("}}").unwrap_or(tail.len());
        missing.push(tail[..end].to_owned());
        rest = &tail[end.min(tail.len())..];
    }
    (text, missing)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KernelKey {
    shader: &'static str,
    entry: &'static str,
    defines: Defines,
}

/// One compiled compute pipeline, with the label that names it in errors.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) label: String,
}

/// Pipelines compiled so far.
#[derive(Default)]
pub(crate) struct KernelCache {
    pipelines: Mutex<HashMap<KernelKey, Kernel>>,
}

impl KernelCache {
    /// The pipeline for `entry` in `shader` with `defines`, compiled on first use.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        shader: &Shader,
        entry: &'static str,
        defines: Defines,
    ) -> Kernel {
        let key = KernelKey {
            shader: shader.name,
            entry,
            defines,
        };
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = cache.get(&key) {
            return k.clone();
        }
        let (text, missing) = preprocess(shader.source, &key.defines);
        debug_assert!(
            missing.is_empty(),
            "{}: undefined placeholders {missing:?}",
            shader.name
        );
        let label = kernel_label(&key);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(text.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let kernel = Kernel { pipeline, label };
        cache.insert(key, kernel.clone());
        kernel
    }

    /// How many pipelines have been compiled.
    pub(crate) fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn kernel_label(key: &KernelKey) -> String {
    let defines: Vec<String> = key
        .defines
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{}:{}[{}]", key.shader, key.entry, defines.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_fills_and_reports_missing() {
        let (text, missing) = preprocess("a {{X}} b {{Y}} c {{X}}", &[("X", "1".into())]);
        assert_eq!(text, "a 1 b {{Y}} c 1");
        assert_eq!(missing, vec!["Y".to_string()]);
    }
}
